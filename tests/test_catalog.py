"""Tests for configs/catalog/flan2022_tasks.csv and flan_mix.data.flan.catalog (no TensorFlow needed)."""

import csv
import importlib.util
import io
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from flan_mix.data.flan import catalog

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).parents[1] / ".." / "shared" / "data"
RELEASED_CSV = SHARED / "flan" / "flan_collection_info.csv"
COT_DIR = SHARED / "flan" / "cot"
BUILD_SCRIPT = REPO / "configs" / "catalog" / "build_catalog.py"
needs_shared = pytest.mark.skipif(not RELEASED_CSV.is_file(), reason=f"shared data not found at {SHARED.resolve()}")


@pytest.fixture(scope="module")
def cat():
    return catalog.load_catalog()


def _load_build_module():
    spec = importlib.util.spec_from_file_location("build_catalog", BUILD_SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _csv_text(rows):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(catalog.COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


@pytest.fixture(scope="module")
def rows(cat):
    return [catalog.format_row(t) for t in cat]


# ---------------------------------------------------------------------------------------------
# The figures.


def test_paper_counts(cat):
    # Flan 2022 (Chung et al. 2022; Longpre et al. 2023): Muffin 80, T0-SF 193, NIv2 1,554, CoT 9.
    assert cat.paper_counts() == {"muffin": 80, "t0_sf": 193, "niv2": 1554, "cot": 9, "total": 1836}
    cat.check_paper_counts()


def test_submixture_sizes(cat):
    listed = Counter(t.submixture for t in cat)
    enabled = Counter(t.submixture for t in cat.enabled())
    assert listed == {"flan2021": 77, "t0_sf": 193, "niv2": 1556, "cot": 9, "dialog": 3}
    assert enabled == {"flan2021": 72, "t0_sf": 193, "niv2": 1554, "cot": 9, "dialog": 2}
    # Muffin = Flan 2021 (+ program synthesis) + dialog.
    assert {t.name for t in cat.by_paper_group("muffin")} == {
        t.name for t in cat if t.submixture in ("flan2021", "dialog")
    }


def test_cot_is_nine_datasets_with_inversions(cat):
    cot = cat.by_submixture("cot")
    assert sorted(t.dataset for t in cot) == sorted(
        ["gsm8k", "strategyqa", "aqua", "creak", "ecqa", "esnli", "qasc", "qed", "sensemaking"]
    )
    for t in cot:
        assert t.loader.kind == "cot_tsv" and t.loader.name == f"{t.dataset}_train.tsv"
        assert t.inversions == ("Question Generation", "Explanation Generation", "Generate Question and Answer from Explanation")


def test_niv2_has_no_mmlu_overlap(cat):
    mmlu = set(range(664, 668)) | set(range(685, 738))
    for t in cat.by_submixture("niv2"):
        number = int(re.match(r"task(\d+)_", t.name).group(1))
        assert number not in mmlu, t.name
        assert t.loader.kind == "niv2" and t.loader.name == t.name + ".json"


def test_niv2_surplus_is_listed_not_counted(cat):
    surplus = [t for t in cat.by_submixture("niv2") if not t.in_paper_count]
    assert [t.name for t in surplus] == ["task1730_personachat_choose_next", "task1731_quartz_question_answering"]
    assert all(not t.enabled and "surplus" in t.disabled_reason for t in surplus)


def test_t0_sf_are_p3_prompts(cat):
    t0 = cat.by_submixture("t0_sf")
    assert len({t.loader.config for t in t0}) == 193
    assert all(t.loader.kind == "hf" and t.loader.name == "bigscience/P3" for t in t0)
    assert all(t.loader.config.startswith(t.dataset.replace("/", "_") + "_") for t in t0)
    assert len({t.dataset for t in t0}) == 24
    # The released CSV truncates dataset names; the real one is kept alongside.
    sq = cat.get("social_i_qa_Generate_answer")
    assert (sq.dataset, sq.csv_dataset, sq.example_count) == ("social_i_qa", "social_i", 33410)


def test_unreleased_tasks_disabled_with_reason(cat):
    unreleased = {t.name: t for t in cat if t.loader.kind == "unavailable"}
    assert set(unreleased) == {
        "dmcc_python", "dr_repair_error_comments", "dr_repair_line_numbers", "dr_repair_no_errors",
        "dr_repair_plain_code", "task_master",
    }
    for t in unreleased.values():
        assert not t.enabled and t.in_paper_count and t.example_count == 0
        assert "legal" in t.disabled_reason and "NB #2" in t.disabled_reason
    assert unreleased["dmcc_python"].ability == "code generation"


def test_mnli_is_two_tasks(cat):
    a, b = cat.get("mnli_matched"), cat.get("mnli_mismatched")
    assert a.csv_dataset == b.csv_dataset == "mnli"
    assert a.loader == b.loader and a.loader.name == "glue/mnli:2.0.0"


def test_every_enabled_task_is_loadable_and_labelled(cat):
    for t in cat.enabled():
        assert t.loader.kind in ("tfds", "hf", "niv2", "cot_tsv"), t.name
        assert t.example_count > 0, t.name
        assert t.ability in catalog.ABILITIES, t.name
        if t.count_source != "published":
            assert t.count_note, t.name
    abilities = Counter(t.ability for t in cat.enabled())
    assert all(abilities[a] > 0 for a in catalog.ABILITIES), abilities


def test_count_sources(cat):
    by_source = Counter((t.submixture, t.count_source) for t in cat)
    # NIv2 counts are estimates until the catalog is rebuilt from a natural-instructions clone.
    assert by_source[("niv2", "estimate")] == 1556
    assert by_source[("t0_sf", "published")] == 193
    assert by_source[("cot", "published")] == 9
    # FLAN's own hold-out arithmetic: rte train[:-200] of 2,490.
    rte = cat.get("rte")
    assert (rte.loader.split, rte.example_count, rte.count_source) == ("train[:-200]", 2290, "derived")


@pytest.mark.skipif(not COT_DIR.is_dir(), reason=f"CoT TSVs not found at {COT_DIR.resolve()}")
def test_cot_counts_equal_real_tsv_line_counts(cat):
    checked = 0
    for t in cat.by_submixture("cot"):
        path = COT_DIR / t.loader.name
        if path.is_file():
            assert path.read_bytes().count(b"\n") == t.example_count, t.name
            checked += 1
    assert checked == 7


def test_counts_table_and_main(cat, capsys):
    table = cat.format_counts_table()
    for group in ("paper:muffin", "paper:t0_sf", "paper:niv2", "paper:cot", "paper:total"):
        line = next(l for l in table.splitlines() if l.startswith(group))
        assert line.rstrip().endswith("ok"), line
    rows = {r.group: r for r in cat.counts_table()}
    assert rows["paper:total"].counted == 1836 and rows["paper:total"].listed == 1838
    assert catalog.main([]) == 0
    assert "paper counts: match" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Reproducibility and coverage of the released CSV.


@needs_shared
def test_committed_catalog_is_rebuilt_byte_for_byte():
    build = _load_build_module()
    text = build.render(build.build(RELEASED_CSV))
    assert text == (REPO / "configs" / "catalog" / "flan2022_tasks.csv").read_text(encoding="utf-8")


@needs_shared
def test_every_released_row_is_a_task_or_an_inversion(cat):
    with open(RELEASED_CSV, newline="", encoding="utf-8") as f:
        released = list(csv.DictReader(f))
    assert len(released) == 1945
    assert sum(1 + len(t.inversions) for t in cat) == len(released)
    by_source = Counter(r["Source"] for r in released)
    for source in by_source:
        tasks = [t for t in cat if t.source == source]
        assert sum(1 + len(t.inversions) for t in tasks) == by_source[source], source


# ---------------------------------------------------------------------------------------------
# Malformed input.


def _expect_error(text, *fragments):
    with pytest.raises(catalog.CatalogError) as e:
        catalog.parse_catalog(text, path="bad.csv")
    msg = str(e.value)
    for frag in fragments:
        assert frag in msg, msg
    return msg


def test_malformed_header(rows):
    text = _csv_text(rows[:2])
    bad = text.replace("example_count,", "examples,", 1)
    _expect_error(bad, "bad.csv:1", "missing columns: example_count", "unknown columns: examples")


@pytest.mark.parametrize(
    "field,value,fragments",
    [
        ("submixture", "muffin", ["field 'submixture'", "'muffin' is not one of"]),
        ("example_count", "12k", ["field 'example_count'", "non-negative integer", "'12k'"]),
        ("enabled", "yes", ["field 'enabled'", "'true' or 'false'"]),
        ("ability", "math", ["field 'ability'"]),
        ("loader_name", "glue/rte", ["field 'loader_name'", "no ':<version>'"]),
        ("field_map", "premise", ["field 'field_map'", "not of the form output=input"]),
        ("loader", "s3", ["field 'loader'"]),
        ("languages", "", ["field 'languages'", "is empty"]),
    ],
)
def test_malformed_field_names_file_line_task_and_field(cat, field, value, fragments):
    rows = [catalog.format_row(cat.get(n)) for n in ("aeslc", "rte", "cb")]
    rows[1] = dict(rows[1], **{field: value})
    _expect_error(_csv_text(rows), "bad.csv:3", "task 'rte'", *fragments)


def test_duplicate_task_name(cat):
    row = catalog.format_row(cat.get("rte"))
    _expect_error(_csv_text([row, row]), "bad.csv:3", "duplicate task name 'rte'", "line 2")


def test_disabled_task_needs_reason(cat):
    row = dict(catalog.format_row(cat.get("rte")), enabled="false")
    _expect_error(_csv_text([row]), "bad.csv:2", "field 'disabled_reason'", "say why")


def test_niv2_loader_name_checked(cat):
    row = dict(catalog.format_row(cat.get("task067_abductivenli_answer_generation")), loader_name="abductive.json")
    _expect_error(_csv_text([row]), "field 'loader_name'", "not a NIv2 task file name")


def test_short_row():
    text = ",".join(catalog.COLUMNS) + "\nrte,flan2021\n"
    _expect_error(text, "bad.csv:2", "row has 2 fields", f"expected {len(catalog.COLUMNS)}")


def test_missing_file(tmp_path):
    with pytest.raises(catalog.CatalogError, match="does not exist"):
        catalog.load_catalog(tmp_path / "nope.csv")


def test_round_trip(cat, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text(_csv_text(catalog.format_row(t) for t in cat), encoding="utf-8")
    again = catalog.load_catalog(path)
    assert again.tasks == cat.tasks


def test_get_unknown_task_suggests(cat):
    with pytest.raises(KeyError, match="Close matches: .*anli_r1"):
        cat.get("anli_r")


def test_catalog_imports_no_tensorflow():
    code = ("import sys, flan_mix.data.flan.catalog as c; c.load_catalog(); "
            "assert 'tensorflow' not in sys.modules, 'tf imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_default_catalog_is_found_in_an_installed_package(tmp_path):
    """setup.py installs configs/ as flan_mix/configs: the default catalog path must follow the package there,
    not the checkout."""
    import shutil

    site = tmp_path / "site"
    shutil.copytree(REPO / "flan_mix", site / "flan_mix", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("configs", "gin"):
        shutil.copytree(REPO / folder, site / "flan_mix" / folder)
    code = ("import flan_mix.data.flan.catalog as c; print(c.DEFAULT_CATALOG_PATH); "
            "print(len(c.load_catalog()))")
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(site), "PATH": ""}).stdout.split()
    assert Path(out[0]) == site / "flan_mix" / "configs" / "catalog" / "flan2022_tasks.csv"
    assert int(out[1]) == len(catalog.load_catalog())
