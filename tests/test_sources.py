"""Tests for flan_mix.data.flan.sources: real CoT TSVs, NIv2 task files, TFDS (mock data), HF (P3)."""

import json
import logging
import os
from collections import Counter
from pathlib import Path

import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")
seqio = pytest.importorskip("seqio")

from flan_mix.data import tf_errors  # noqa: E402
from flan_mix.data.data_errors import MalformedDataError, MissingDataError, OptionalDependencyError  # noqa: E402
from flan_mix.data.flan import catalog  # noqa: E402
from flan_mix.data.flan.sources import base, cot, niv2_files  # noqa: E402
from flan_mix.data.flan.sources.by_kind import source_for_task  # noqa: E402
from flan_mix.data.flan.sources.cot import cot_tsv_source  # noqa: E402
from flan_mix.data.flan.sources.hf import hf_source  # noqa: E402
from flan_mix.data.flan.sources.niv2 import niv2_source  # noqa: E402
from flan_mix.data.flan.sources.tfds import tfds_source  # noqa: E402

SHARED = Path(__file__).parents[1] / ".." / "shared" / "data"
COT_DIR = SHARED / "flan" / "cot"
needs_cot = pytest.mark.skipif(not COT_DIR.is_dir(), reason=f"real CoT TSVs not found at {COT_DIR.resolve()}")


@pytest.fixture(scope="module")
def cat():
    return catalog.load_catalog()


def _rows(ds):
    """Examples as hashable tuples of (field, value) with bytes/lists decoded."""
    out = []
    for ex in ds.as_numpy_iterator():
        item = []
        for k in sorted(ex):
            v = ex[k]
            item.append((k, tuple(x.decode() for x in v) if hasattr(v, "shape") and v.shape else v.decode()))
        out.append(tuple(item))
    return out


def _whole_file(src):
    """Every example of a file source in file order: train and validation (its held-out slice) put back
    together at their positions (base.holdout_split), as numpy dicts."""
    train = list(src.get_dataset("train", shuffle=False).as_numpy_iterator())
    val = list(src.get_dataset("validation", shuffle=False).as_numpy_iterator())
    train_pos, val_pos = base.holdout_split(len(train) + len(val))
    assert len(train_pos) == len(train) and len(val_pos) == len(val)
    out = [None] * (len(train) + len(val))
    for positions, examples in ((train_pos, train), (val_pos, val)):
        for p, ex in zip(positions, examples):
            out[p] = ex
    return out


def _whole_rows(src):
    """_rows of _whole_file(src)."""
    return _rows(tf.data.Dataset.from_generator(lambda: iter(_whole_file(src)),
                                                output_signature=src.get_dataset("train").element_spec))


def _check_shards(source, num_shards, **kwargs):
    full = _rows(source.get_dataset(shuffle=False))
    shards = [_rows(source.get_dataset(shard_info=seqio.ShardInfo(i, num_shards), **kwargs)) for i in range(num_shards)]
    union = Counter()
    for s in shards:
        union.update(s)
    # Disjoint (no example is in two shards) and covering (every example in exactly one).
    assert union == Counter(full)
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1, sizes
    return full, shards


# ---------------------------------------------------------------------------------------------
# CoT TSVs.


@needs_cot
def test_real_cot_tsvs_load(cat):
    loaded = 0
    for rec in cat.by_submixture("cot"):
        src = source_for_task(rec, cot_dir=COT_DIR)
        if not (COT_DIR / rec.loader.name).is_file():
            with pytest.raises(MissingDataError) as e:
                src.get_dataset()
            msg = str(e.value)
            assert rec.name in msg and rec.loader.name in msg and "flan/v2/cot_data" in msg
            continue
        columns = {f: [] for f in cot.COT_FIELDS}
        for batch in src.get_dataset(shuffle=False).batch(4096).as_numpy_iterator():
            for f in cot.COT_FIELDS:
                columns[f].extend(batch[f])
        examples = [dict(zip(columns, values)) for values in zip(*columns.values())]
        # Train is the file less its held-out validation slice.
        n_val = base.holdout_size(rec.example_count)
        assert len(examples) == rec.example_count - n_val == src.num_input_examples("train")
        assert src.num_input_examples("validation") == n_val
        lines = (COT_DIR / rec.loader.name).read_bytes().decode("utf-8").split("\n")  # as the reader splits
        lines = lines[:-1] if lines[-1] == "" else lines
        train_pos, _ = base.holdout_split(len(lines))
        # First and last train line come through unchanged, in file order.
        for ex, line in ((examples[0], lines[train_pos[0]]), (examples[-1], lines[train_pos[-1]])):
            assert [ex[f].decode() for f in cot.COT_FIELDS] == line.split("\t")
        assert all(ex["question"] and ex["answer"] and ex["rationale"] for ex in examples)
        loaded += 1
    assert loaded == 7


@needs_cot
def test_real_cot_shards_disjoint_and_cover(cat):
    src = source_for_task(cat.get("stream_qasc"), cot_dir=COT_DIR)
    for n in (2, 3):
        _check_shards(src, n, shuffle=True, seed=7)


def _write_tsv(path, lines):
    path.write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    return path


def test_cot_determinism_and_order(tmp_path):
    _write_tsv(tmp_path / "toy_train.tsv", [f"q{i}\ta{i}\tr{i}" for i in range(50)])
    src = cot_tsv_source("toy", tmp_path, "toy_train.tsv")
    in_order = [r[1][1] for r in _rows(src.get_dataset(shuffle=False))]
    assert in_order == [f"q{i}" for i in base.holdout_split(50)[0]]  # train: the file less 2 held out
    assert [r[1][1] for r in _whole_rows(src)] == [f"q{i}" for i in range(50)]
    a = _rows(src.get_dataset(shuffle=True, seed=1))
    assert a == _rows(src.get_dataset(shuffle=True, seed=1))
    assert a != _rows(src.get_dataset(shuffle=True, seed=2))
    assert _rows(src.get_dataset(shuffle=True)) == _rows(src.get_dataset(shuffle=True, seed=0))  # seed None -> 0
    assert sorted(a) == sorted(_rows(src.get_dataset(shuffle=False)))
    _check_shards(src, 4, shuffle=True, seed=3)


@pytest.mark.parametrize(
    "bad_line,problem",
    [
        ("only a question\tanswer", "expected 3 tab-separated fields (question, answer, rationale), got 2"),
        ("q\ta\tr\textra", "got 4"),
        ("   ", "empty line"),
        ("q\t\tr", "field 'answer' is empty"),
    ],
)
def test_cot_malformed_line_names_file_and_line(tmp_path, bad_line, problem):
    path = _write_tsv(tmp_path / "bad_train.tsv", ["q1\ta1\tr1", "q2\ta2\tr2", bad_line, "q4\ta4\tr4"])
    with pytest.raises(MalformedDataError) as e:
        cot_tsv_source("bad", tmp_path, "bad_train.tsv").get_dataset()
    assert str(e.value).startswith(f"{path}:line 3: ")
    assert problem in str(e.value)


def test_cot_invalid_utf8(tmp_path):
    (tmp_path / "u_train.tsv").write_bytes(b"q\ta\tr\n\xff\xfe\ta\tr\n")
    with pytest.raises(MalformedDataError, match="line 2: invalid UTF-8"):
        cot.read_cot_tsv(tmp_path / "u_train.tsv")


def test_cot_skip_malformed_is_explicit_and_logged(tmp_path, caplog):
    _write_tsv(tmp_path / "s_train.tsv", ["q1\ta1\tr1", "broken", "q3\ta3\tr3", "also broken"])
    src = cot_tsv_source("skippy", tmp_path, "s_train.tsv", skip_malformed=True)
    with caplog.at_level(logging.WARNING, logger="flan_mix.data.data_errors"):
        got = [r[1][1] for r in _whole_rows(src)]
    assert got == ["q1", "q3"]
    assert "skipped 2 malformed record(s)" in caplog.text and "skippy" in caplog.text


def test_cot_missing_data(tmp_path):
    with pytest.raises(MissingDataError, match=r"Task 'cot_x': no CoT data directory was given"):
        cot_tsv_source("cot_x", None, "x_train.tsv").get_dataset()
    with pytest.raises(MissingDataError, match=r"x_train.tsv is not in .*google-research/FLAN"):
        cot_tsv_source("cot_x", tmp_path, "x_train.tsv").get_dataset()
    with pytest.raises(MissingDataError, match="does not exist"):
        cot_tsv_source("cot_x", tmp_path / "nope", "x_train.tsv").get_dataset()


# ---------------------------------------------------------------------------------------------
# NIv2 task files, written by hand in the real format.


def _niv2_task(n_instances=12, **overrides):
    task = {
        "Contributors": ["A. Contributor"],
        "Source": ["toy_dataset"],
        "URL": ["https://example.org/toy"],
        "Categories": ["Question Answering"],
        "Reasoning": ["Commonsense Reasoning"],
        "Definition": ["Answer the question about the passage. Give a short answer."],
        "Input_language": ["English"],
        "Output_language": ["English"],
        "Instruction_language": ["English"],
        "Domains": ["Wikipedia"],
        "Positive Examples": [
            {"input": "Passage: Rain falls. Question: What falls?", "output": "Rain", "explanation": "Stated directly."},
            {"input": "Passage: Ève lit. Question: Who reads?", "output": "Ève", "explanation": "Accents survive."},
        ],
        "Negative Examples": [{"input": "Passage: x. Question: y?", "output": "banana", "explanation": "Unrelated."}],
        "Instances": [
            {"id": f"task901-{i:04d}", "input": f"Passage: item {i} — naïve. Question: which?", "output": [f"item {i}", f"#{i}"]}
            for i in range(n_instances)
        ],
        "Instance License": ["CC BY 4.0"],
    }
    task.update(overrides)
    return task


def _write_niv2(root, name, task, **dump_kwargs):
    tasks = root / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    path = tasks / f"{name}.json"
    path.write_text(json.dumps(task, ensure_ascii=False, indent=4, **dump_kwargs), encoding="utf-8")
    return path


def test_niv2_task_file_loads(tmp_path):
    _write_niv2(tmp_path, "task901_toy_qa", _niv2_task())
    src = niv2_source("task901_toy_qa", tmp_path)  # the clone root
    examples = _whole_file(src)
    assert len(examples) == 12 == src.num_input_examples("train") + src.num_input_examples("validation")
    first = examples[0]
    assert first["id"] == b"task901-0000"
    assert first["definition"].decode() == "Answer the question about the passage. Give a short answer."
    assert first["input"].decode() == "Passage: item 0 — naïve. Question: which?"
    assert first["output"] == b"item 0"
    assert [x.decode() for x in first["all_outputs"]] == ["item 0", "#0"]
    assert [x.decode() for x in first["pos_outputs"]] == ["Rain", "Ève"]
    assert first["pos_explanations"][1] == "Accents survive.".encode()
    # Also accepts the tasks/ directory itself, and the whole-file reader agrees.
    again = _whole_file(niv2_source("task901_toy_qa", tmp_path / "tasks"))
    assert [e["input"] for e in again] == [e["input"] for e in examples]
    task = niv2_files.read_niv2_task(tmp_path / "tasks" / "task901_toy_qa.json")
    assert [i.outputs for i in task.instances] == [(f"item {i}", f"#{i}") for i in range(12)]
    assert task.positive_examples[1].input == "Passage: Ève lit. Question: Who reads?"


def test_niv2_compact_json_and_string_definition(tmp_path):
    task = _niv2_task(5, Definition="One string definition.")
    path = tmp_path / "tasks" / "task902_compact.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(task, separators=(",", ":")), encoding="utf-8")  # ASCII-escaped, no whitespace
    ex = _whole_file(niv2_source("task902_compact", tmp_path))
    assert len(ex) == 5 and ex[4]["input"].decode() == "Passage: item 4 — naïve. Question: which?"
    assert ex[0]["definition"] == b"One string definition."


def test_niv2_shards_determinism_and_max_instances(tmp_path):
    _write_niv2(tmp_path, "task903_shards", _niv2_task(23))
    src = niv2_source("task903_shards", tmp_path)
    full, _ = _check_shards(src, 4, shuffle=True, seed=11)
    assert len(full) == 23 - base.holdout_size(23)
    assert _rows(src.get_dataset(seed=5)) == _rows(src.get_dataset(seed=5))
    assert _rows(src.get_dataset(seed=5)) != _rows(src.get_dataset(seed=6))
    capped = niv2_source("task903_shards", tmp_path, max_instances=10)
    assert len(_rows(capped.get_dataset(shuffle=False))) == 10 == capped.num_input_examples("train")
    # max_instances caps train only: the first 10 train instances in file order; validation is unchanged.
    assert _rows(capped.get_dataset(shuffle=False)) == _rows(src.get_dataset(shuffle=False))[:10]
    assert _rows(capped.get_dataset("validation")) == _rows(src.get_dataset("validation"))


@pytest.mark.parametrize(
    "mutate,location,problem",
    [
        (lambda t: t["Instances"][3].update(output="item 3"), "field Instances[3].output", "expected a non-empty list of strings"),
        (lambda t: t["Instances"][5].update(output=[]), "field Instances[5].output", "non-empty list"),
        (lambda t: t["Instances"][2].pop("input"), "field Instances[2]", "missing key 'input'"),
        (lambda t: t["Instances"][1].update(output=["ok", 7]), "field Instances[1].output[1]", "expected a string, got int"),
        (lambda t: t.pop("Definition"), "field Definition", "is missing"),
        (lambda t: t.update(Definition=[]), "field Definition", "non-empty list of strings"),
        (lambda t: t["Positive Examples"][0].pop("output"), "field Positive Examples[0]", "missing key 'output'"),
        (lambda t: t.pop("Instances"), "field Instances", "is missing"),
        (lambda t: t.update(Instances=[]), "field Instances", "has no instances"),
    ],
)
def test_niv2_malformed_fields(tmp_path, mutate, location, problem):
    task = _niv2_task(8)
    mutate(task)
    path = _write_niv2(tmp_path, "task904_bad", task)
    with pytest.raises(MalformedDataError) as e:
        niv2_source("task904_bad", tmp_path).validate()
    assert str(e.value).startswith(f"{path}:{location}: "), str(e.value)
    assert problem in str(e.value)


def test_niv2_invalid_json_names_line(tmp_path):
    path = _write_niv2(tmp_path, "task905_syntax", _niv2_task(4))
    lines = path.read_text(encoding="utf-8").splitlines()
    k = next(i for i, l in enumerate(lines) if '"task901-0002"' in l)
    lines[k] = lines[k].rstrip(",")  # drop a comma between two keys
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(MalformedDataError) as e:
        niv2_files.read_niv2_task(path)
    assert f"{path}:line {k + 2}, column" in str(e.value) and "invalid JSON" in str(e.value)


def test_niv2_malformed_error_surfaces_during_iteration(tmp_path):
    task = _niv2_task(4)
    task["Instances"][2]["output"] = "not a list"
    path = _write_niv2(tmp_path, "task906_lazy", task)
    ds = niv2_source("task906_lazy", tmp_path).get_dataset()  # lazy: nothing read yet
    with pytest.raises(MalformedDataError) as e:  # the original error, not TensorFlow's wrapper of it
        list(tf_errors.numpy_rows(ds))
    assert str(e.value).startswith(f"{path}:field Instances[2].output")
    with pytest.raises(tf.errors.OpError) as e:  # iterated without numpy_rows: TensorFlow's error, text kept
        list(ds)
    assert f"{path}:field Instances[2].output" in str(e.value)


def test_niv2_skip_malformed_logs_count(tmp_path, caplog):
    task = _niv2_task(6)
    task["Instances"][1]["output"] = []
    task["Instances"][4]["output"] = "x"
    _write_niv2(tmp_path, "task907_skip", task)
    src = niv2_source("task907_skip", tmp_path, skip_malformed=True)
    with caplog.at_level(logging.WARNING, logger="flan_mix.data.data_errors"):
        ids = [e["id"].decode() for e in _whole_file(src)]
    assert ids == ["task901-0000", "task901-0002", "task901-0003", "task901-0005"]
    assert "skipped 2 malformed record(s)" in caplog.text


def test_niv2_missing_data(tmp_path):
    with pytest.raises(MissingDataError) as e:
        niv2_source("task908_x", None).get_dataset()
    assert "task908_x" in str(e.value) and "git clone" in str(e.value) and "allenai/natural-instructions" in str(e.value)
    (tmp_path / "tasks").mkdir()
    with pytest.raises(MissingDataError, match=r"task file .*task908_x.json does not exist"):
        niv2_source("task908_x", tmp_path).get_dataset()


def test_niv2_file_changed_after_indexing(tmp_path):
    path = _write_niv2(tmp_path, "task909_changed", _niv2_task(3))
    src = niv2_source("task909_changed", tmp_path)
    src.validate()
    _write_niv2(tmp_path, "task909_changed", _niv2_task(30))
    os.utime(path, ns=(1, 1))
    with pytest.raises(Exception, match="changed on disk"):
        list(src.get_dataset())


def test_niv2_source_for_catalog_record(cat, tmp_path):
    rec = cat.get("task067_abductivenli_answer_generation")
    _write_niv2(tmp_path, rec.name, _niv2_task(3))
    src = source_for_task(rec, niv2_dir=tmp_path)
    assert len(list(src.get_dataset())) + len(list(src.get_dataset("validation"))) == 3


# ---------------------------------------------------------------------------------------------
# TFDS on tfds.testing.mock_data.


def test_tfds_source_on_mock_data(cat, tmp_path):
    rec = cat.get("rte")  # super_glue/rte: premise, hypothesis, label (ClassLabel)
    with tfds.testing.mock_data(num_examples=13):
        src = source_for_task(rec, tfds_data_dir=tmp_path)
        ds = src.get_dataset(shuffle=False)
        assert ds.element_spec == {k: tf.TensorSpec([], tf.string) for k in ("premise", "hypothesis", "label")}
        examples = list(ds.as_numpy_iterator())
        assert len(examples) == 13
        assert {e["label"] for e in examples} <= {b"0", b"1"}
        full, _ = _check_shards(src, 3, shuffle=False)
        assert len(full) == 13
        # The Python path (what the mixture streamer reads) gives the same examples in the same order.
        rows = list(src.iter_examples(shuffle=True, seed=4, num_epochs=2))
        once = list(src.get_dataset(shuffle=True, seed=4).as_numpy_iterator())
        assert len(rows) == 26 and [r["premise"] for r in rows[:13]] == [e["premise"] for e in once]


def test_tfds_nested_vector_and_bool_fields(cat, tmp_path):
    with tfds.testing.mock_data(num_examples=4):
        squad = source_for_task(cat.get("squad_v2"), tfds_data_dir=tmp_path / "a").get_dataset(shuffle=False)
        assert squad.element_spec["answers"] == tf.TensorSpec([None], tf.string)
        assert squad.element_spec["is_impossible"] == tf.TensorSpec([], tf.string)
        assert {e["is_impossible"] for e in squad.as_numpy_iterator()} <= {b"true", b"false"}
        boolq = source_for_task(cat.get("bool_q"), tfds_data_dir=tmp_path / "b").get_dataset(shuffle=False)
        assert {e["answer"] for e in boolq.as_numpy_iterator()} <= {b"true", b"false"}


def test_tfds_bad_field_path_lists_available(tmp_path):
    with tfds.testing.mock_data(num_examples=2):
        src = tfds_source("rte_bad", "super_glue/rte:1.0.2", "train", {"premise": "premis"}, tmp_path)
        with pytest.raises(ValueError, match=r"Task 'rte_bad': field 'premise' reads feature 'premis'.*available: .*hypothesis"):
            src.get_dataset()


def test_tfds_missing_data(cat, tmp_path):
    src = source_for_task(cat.get("cb"), tfds_data_dir=tmp_path / "empty_tfds")
    with pytest.raises(MissingDataError) as e:
        src.get_dataset()
    msg = str(e.value)
    assert "Task 'cb'" in msg and "super_glue/cb:1.0.2" in msg and "not prepared" in msg
    assert "tfds build super_glue/cb" in msg
    with pytest.raises(MissingDataError, match=r"empty_tfds/super_glue/cb/1.0.2 does not exist"):
        src.check_available()  # the registration-time check (allow_missing_tasks) reads nothing


def test_every_catalog_tfds_spec_matches_builder_features(cat):
    """Each TFDS loader names a buildable dataset whose features contain every mapped path."""

    def has_path(features, path):
        node = features
        for part in path.split("/"):
            if isinstance(node, tfds.features.Sequence):
                node = node.feature
            if not isinstance(node, tfds.features.FeaturesDict) or part not in node:
                return False
            node = node[part]
        return True

    checked = 0
    for rec in cat:
        if rec.loader.kind != "tfds":
            continue
        builder = tfds.builder(rec.loader.name, data_dir="/nonexistent_tfds_dir_for_feature_check")
        for out, path in rec.loader.field_map:
            assert has_path(builder.info.features, path), f"{rec.name}: {out}={path} not in {rec.loader.name}"
        checked += 1
    assert checked == 74


# ---------------------------------------------------------------------------------------------
# HF datasets (P3), an optional extra.


def test_hf_without_datasets_package_raises_clearly(cat):
    try:
        import datasets  # noqa: F401

        pytest.skip("the `datasets` package is installed here")
    except ImportError:
        pass
    src = source_for_task(cat.get("social_i_qa_Generate_answer"))
    with pytest.raises(OptionalDependencyError) as e:
        src.get_dataset()
    assert "social_i_qa_Generate_answer" in str(e.value) and "pip install datasets" in str(e.value)


def test_hf_source_with_injected_loader(cat):
    rows = [
        {"inputs_pretokenized": f"Q{i}?", "targets_pretokenized": f"A{i}", "answer_choices": [f"A{i}", "other"]}
        for i in range(10)
    ]
    calls = []

    def load(name, config, split):
        calls.append((name, config, split))
        return rows

    rec = cat.get("social_i_qa_Generate_answer")
    fmap = dict(rec.loader.field_map, choices="answer_choices")
    src = hf_source(rec.name, rec.loader.name, rec.loader.config, "train", fmap, load_fn=load)
    ds = src.get_dataset(shuffle=False)
    assert ds.element_spec["choices"] == tf.TensorSpec([None], tf.string)
    got = list(ds.as_numpy_iterator())
    assert [g["inputs"] for g in got] == [f"Q{i}?".encode() for i in range(10)]
    assert calls[0] == ("bigscience/P3", "social_i_qa_Generate_answer", "train")
    _check_shards(src, 3, shuffle=True, seed=2)


def test_hf_missing_dataset(cat):
    def load(name, config, split):
        raise FileNotFoundError("no cached copy")

    src = hf_source("p3_x", "bigscience/P3", "p3_x", "train", {"inputs": "inputs_pretokenized"}, load_fn=load)
    with pytest.raises(MissingDataError, match=r"Task 'p3_x': HF dataset 'bigscience/P3'.*HF_DATASETS_OFFLINE=1"):
        src.get_dataset()


# ---------------------------------------------------------------------------------------------


def test_every_loader_kind_is_an_example_source(cat, tmp_path):
    """One declared interface: whatever the kind, a source is a seqio.DataSource and a base.ExampleSource."""
    first = {}
    for rec in cat.enabled():
        first.setdefault(rec.loader.kind, rec)
    assert set(first) == {"tfds", "hf", "niv2", "cot_tsv"}
    for kind, rec in first.items():
        src = source_for_task(rec, tfds_data_dir=tmp_path, niv2_dir=tmp_path, cot_dir=tmp_path)
        assert isinstance(src, base.ExampleSource) and isinstance(src, seqio.DataSource), kind
    assert not isinstance(object(), base.ExampleSource)


def test_data_errors_share_one_base_and_keep_theirs():
    from flan_mix.data.data_errors import DataError

    for err, builtin in ((MissingDataError("t", "x", "y"), FileNotFoundError),
                         (MalformedDataError("f", "line 1", "p"), ValueError),
                         (OptionalDependencyError("no datasets"), ImportError),
                         (catalog.CatalogError("c.csv:2: bad"), ValueError)):
        assert isinstance(err, DataError) and isinstance(err, builtin), type(err)


def test_errors_pickle():
    import pickle

    e = pickle.loads(pickle.dumps(MissingDataError("t", "x is missing", "get x")))
    assert str(e) == "Task 't': x is missing. get x" and e.task == "t"
    m = pickle.loads(pickle.dumps(MalformedDataError("f.tsv", "line 3", "bad")))
    assert str(m) == "f.tsv:line 3: bad" and m.location == "line 3"


def test_unavailable_task_has_no_source(cat):
    with pytest.raises(MissingDataError, match="Task 'task_master': no loader exists.*legal"):
        source_for_task(cat.get("task_master"))


def test_sources_work_inside_a_seqio_task(tmp_path):
    """A seqio Task passes ShardInfo straight to the source (supports_arbitrary_sharding)."""
    _write_tsv(tmp_path / "t_train.tsv", [f"q{i}\ta{i}\tr{i}" for i in range(9)])
    src = cot_tsv_source("t", tmp_path, "t_train.tsv")
    task = seqio.Task(
        "flan_mix_test_sources_cot_task",
        source=src,
        output_features={"question": seqio.Feature(seqio.PassThroughVocabulary(1), dtype=tf.string, rank=0)},
        preprocessors=[],
    )
    try:
        shards = [
            [e["question"] for e in task.get_dataset(None, shuffle=False, shard_info=seqio.ShardInfo(i, 2)).as_numpy_iterator()]
            for i in range(2)
        ]
    finally:
        seqio.TaskRegistry.remove("flan_mix_test_sources_cot_task")
    assert sorted(shards[0] + shards[1]) == sorted(f"q{i}".encode() for i in base.holdout_split(9)[0])
    assert not set(shards[0]) & set(shards[1])


def test_errors_inside_tf_data_reach_the_caller_as_themselves():
    def inner():
        yield b"a"
        raise MalformedDataError("/data/x.json", "line 7, column 3", "invalid JSON: Expecting ',' delimiter")

    def outer():  # a generator that reads another dataset, as the Flan render step reads its source
        yield from tf_errors.numpy_rows(tf_errors.from_generator(inner, tf.TensorSpec([], tf.string)))

    ds = tf_errors.from_generator(outer, tf.TensorSpec([], tf.string)).map(lambda s: s + b"!")
    rows, err = [], None
    try:
        for row in tf_errors.numpy_rows(ds):
            rows.append(row)
    except MalformedDataError as e:
        err = e
    assert rows == [b"a!"] and str(err) == "/data/x.json:line 7, column 3: invalid JSON: Expecting ',' delimiter"
    # A TensorFlow error of TensorFlow's own stays what it is.
    bad = tf.data.Dataset.from_tensor_slices([1.0, -1.0]).map(
        lambda x: tf.debugging.check_numerics(tf.math.log(x), "log"))
    with pytest.raises(tf.errors.InvalidArgumentError):
        list(tf_errors.numpy_rows(bad))
