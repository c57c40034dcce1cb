"""Input inversion of the Flan 2021 tasks: every enabled task's catalog row lists an inverted variant, and its
examples render inverted (the answer or output given, the input asked for) at a gin-bindable share."""
from __future__ import annotations

import csv

import gin
import pytest
import seqio

from flan_mix.data import registration, templates
from flan_mix.data.flan import catalog as catalog_lib
from flan_mix.data.flan import flan_tasks, flan_templates
from flan_mix.data.flan.rendering import render_stream

# One hand-written raw example per template family of flan2021, in its loader's field layout, with the text the
# inverted prompt must show (the answer or output) and the text it must ask for (the input).
RAW = {
    "anli_r1": ({"context": b"The cat slept all day.", "hypothesis": b"The cat was awake.", "label": b"2"},
                "no", "The cat was awake."),
    "glue_mrpc": ({"sentence1": b"He left early.", "sentence2": b"He went home before noon.", "label": b"1"},
                  "yes", "He went home before noon."),
    "sst2": ({"sentence": b"a warm and funny film", "label": b"1"}, "positive", "a warm and funny film"),
    "ag_news_subset": ({"title": b"Stocks rally", "description": b"Markets rose.", "label": b"2"},
                       "Business", "Stocks rally\nMarkets rose."),
    "cola": ({"sentence": b"Him went home.", "label": b"0"}, "unacceptable", "Him went home."),
    "xsum": ({"document": b"A long report about rain in the north.", "summary": b"Rain in the north."},
             "Rain in the north.", "A long report about rain in the north."),
    "squad_v1": ({"title": b"t", "context": b"Lima is the capital of Peru.", "question": b"What is Peru's capital?",
                  "answers": [b"Lima"]}, "Lima", "What is Peru's capital?"),
    "e2e_nlg": ({"meaning_representation": b"name[Blue Spice], food[Thai]",
                 "target": b"Blue Spice serves Thai food."},
                "Blue Spice serves Thai food.", "name[Blue Spice], food[Thai]"),
    "fix_punct": ({"en": b"Hello, world."}, "Hello, world.", "Hello world"),
    "natural_questions": ({"question": b"who wrote hamlet", "answer": [b"Shakespeare"]}, "Shakespeare",
                          "who wrote hamlet"),
    "arc_easy": ({"question": b"Which is a mammal?", "choices_text": [b"frog", b"whale"],
                  "choices_label": [b"A", b"B"], "answerKey": b"B"}, "whale", "Which is a mammal?"),
}


@pytest.fixture(scope="module")
def cat():
    return catalog_lib.load_catalog()


@pytest.fixture(scope="module")
def vocabulary():
    return registration.register_all(collections=())


def _task(cat, vocabulary, name, template_type="zs_noopt", weight=1.0, seed=0):
    return flan_tasks._make_task(cat.get(name), template_type, flan_tasks.DataDirs(), seed, vocabulary,
                                 inversion_weights={"flan2021": weight})


def test_every_enabled_flan2021_task_has_inverted_templates(cat, vocabulary):
    records = cat.by_submixture("flan2021", enabled_only=True)
    assert len(records) == 72 and all(r.inversions for r in records)
    families = {flan_templates.family_for(r.template_family, r.name) for r in records}
    for fam in families:
        assert templates.get_family(fam).invertible, fam
    assert flan_tasks.INVERSION_WEIGHTS["flan2021"] == 0.3
    default = flan_tasks._make_task(records[0], "zs_opt", flan_tasks.DataDirs(), 0, vocabulary)
    assert default.spec.inversion_weight == 0.3
    for sub in ("t0_sf", "niv2"):  # their catalog rows list no inverted variants: never inverted
        rec = cat.by_submixture(sub, enabled_only=True)[0]
        assert not rec.inversions
        task = flan_tasks._make_task(rec, "zs_opt", flan_tasks.DataDirs(), 0, vocabulary,
                                     inversion_weights={"flan2021": 1.0})
        assert task.spec.inversion_weight == 0.0


@pytest.mark.parametrize("name", sorted(RAW))
@pytest.mark.parametrize("template_type", ["zs_opt", "fs_noopt"])
def test_inverted_variant_gives_the_answer_and_asks_for_the_input(cat, vocabulary, name, template_type):
    raw, shown, asked = RAW[name]
    task = _task(cat, vocabulary, name, template_type)
    raws = [raw, raw, raw]  # few-shot needs neighbours to draw exemplars from
    for rec in render_stream(iter(raws), task.spec, task.adapter):
        assert "/inv/" in rec["template_id"], rec
        assert rec["targets"] == asked
        assert shown in rec["inputs"]
        assert not any(h in rec["inputs"] for h in templates.OPTION_HEADERS)  # no options block when inverted


def test_translation_inversion_asks_for_the_source_language_text(cat, vocabulary):
    task = _task(cat, vocabulary, "wmt16_translate_deen")
    raw = {"de": b"Guten Morgen.", "en": b"Good morning."}
    recs = [next(render_stream(iter([raw]), task.spec, task.adapter)) for _ in range(2)]
    assert recs[0] == recs[1]  # the direction is drawn from the example's content: the same every time
    rec = recs[0]
    assert "/inv/" in rec["template_id"] and rec["targets"] in ("Guten Morgen.", "Good morning.")
    other = "Good morning." if rec["targets"] == "Guten Morgen." else "Guten Morgen."
    assert other in rec["inputs"]


def _sst2_raws(n):
    return [{"sentence": f"review number {i}".encode(), "label": str(i % 2).encode()} for i in range(n)]


def test_inversion_share_follows_the_weight_and_is_deterministic(cat, vocabulary):
    raws = _sst2_raws(400)

    def inverted(weight, seed=0):
        task = _task(cat, vocabulary, "sst2", "zs_opt", weight, seed)
        return ["/inv/" in r["template_id"] for r in render_stream(iter(raws), task.spec, task.adapter)]

    for weight in (0.3, 0.5):
        flags = inverted(weight)
        assert flags == inverted(weight)  # same seed, same examples inverted
        assert abs(sum(flags) / len(flags) - weight) < 0.08  # binomial sd at n=400 is < 0.025
    assert inverted(0.3, seed=1) != inverted(0.3, seed=0)
    assert not any(inverted(0.0)) and all(inverted(1.0))


def _small_catalog(tmp_path, cat, names):
    path = tmp_path / "catalog.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(catalog_lib.COLUMNS))
        w.writeheader()
        for n in names:
            w.writerow(catalog_lib.format_row(cat.get(n)))
    return str(path)


def test_weight_binding_sets_the_rate_of_inverted_examples(tmp_path, cat, vocabulary):
    """anli_r1 (16,946 examples) and mnli_matched (30,000, the flan2021 cap) in flan2021; cot_gsm8k (7,473) and
    stream_qasc (1,084) in cot. In flan2022_submix flan2021 weighs .40/.45 and cot .05/.45."""
    path = _small_catalog(tmp_path, cat, ["anli_r1", "mnli_matched", "cot_gsm8k", "stream_qasc"])
    anli_zs = (0.40 / 0.45) * 0.25 * 16946 / 46946  # 4 template types share anli_r1's rate
    gsm8k_zs = (0.05 / 0.45) * 0.5 * 7473 / 8557  # 2 template types

    gin.parse_config("register_flan2022.inversion_weights = {'flan2021': 0.5}")
    reg = flan_tasks.register_flan2022(vocabulary, catalog_path=path, cot_dir=None, submixtures=("flan2021", "cot"))
    rates = reg.mixtures[flan_tasks.SUBMIX_MIXTURE]
    assert rates["flan2022_anli_r1_zs_opt"] == pytest.approx(anli_zs)
    inverted = reg.inverted_rates(flan_tasks.SUBMIX_MIXTURE)
    assert inverted["flan2022_anli_r1_zs_opt"] == pytest.approx(0.5 * anli_zs)
    assert inverted["flan2022_cot_gsm8k_fs_opt"] == pytest.approx(0.3 * gsm8k_zs)  # cot keeps its default
    assert sum(inverted.values()) == pytest.approx(0.5 * 0.40 / 0.45 + 0.3 * 0.05 / 0.45)
    assert seqio.TaskRegistry.get("flan2022_anli_r1_fs_noopt").spec.inversion_weight == 0.5

    gin.clear_config()
    gin.parse_config("register_flan2022.inversion_weights = {'flan2021': 0.0}")
    off = flan_tasks.register_flan2022(vocabulary, catalog_path=path, cot_dir=None, submixtures=("flan2021", "cot"))
    assert off.mixtures == reg.mixtures  # inversion shares a task's examples, not the mixture's task rates
    assert set(off.inverted_rates(flan_tasks.SUBMIX_MIXTURE)) == {
        f"flan2022_{t}_{tt}" for t in ("cot_gsm8k", "stream_qasc") for tt in ("zs_opt", "fs_opt")}


@pytest.mark.parametrize("weights,match", [
    ({"niv2": 0.5}, "no niv2 task lists inverted variants"),
    ({"flan2021": 1.5}, r"must be in \[0, 1\]"),
    ({"flan2012": 0.3}, "unknown submixture 'flan2012'"),
])
def test_bad_inversion_weights_say_what_and_where(vocabulary, weights, match):
    with pytest.raises(ValueError, match=f"register_flan2022.inversion_weights.*{match}"):
        flan_tasks.register_flan2022(vocabulary, inversion_weights=weights, submixtures=("cot",), cot_dir=None)
