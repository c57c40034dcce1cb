"""Validation splits of the Flan 2022 tasks (held-in evaluation): the rule of each source kind, the held-out slice
of the CoT TSVs and NIv2 task files (disjoint from train, together the file exactly once, deterministic, sharded
per host), TFDS and HF validation splits, and pipeline.get_eval_examples on the real CoT data."""
from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")
seqio = pytest.importorskip("seqio")

from flan_mix.data import pipeline, registration  # noqa: E402
from flan_mix.data.flan import catalog as catalog_lib  # noqa: E402
from flan_mix.data.flan import flan_tasks  # noqa: E402
from flan_mix.data.flan.sources import base  # noqa: E402
from flan_mix.data.flan.sources.by_kind import source_for_task, validation_source  # noqa: E402
from flan_mix.data.flan.sources.cot import cot_tsv_source  # noqa: E402
from flan_mix.data.flan.sources.hf import hf_source  # noqa: E402
from flan_mix.data.flan.sources.niv2 import niv2_source  # noqa: E402
from flan_mix.data.flan.sources.tfds import tfds_validation_split  # noqa: E402

COT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flan" / "cot"
needs_cot = pytest.mark.skipif(not COT_DIR.is_dir(), reason=f"real CoT TSVs not found at {COT_DIR}")


@pytest.fixture(scope="module")
def cat():
    return catalog_lib.load_catalog()


def _key(ex):
    """An example as a hashable tuple, values decoded (str or tuple of str)."""
    def dec(v):
        if isinstance(v, (list, tuple)) or (isinstance(v, np.ndarray) and v.ndim):
            return tuple(dec(x) for x in v)
        return v.decode() if isinstance(v, bytes) else str(v)
    return tuple((k, dec(ex[k])) for k in sorted(ex))


def _tsv_lines(path: Path) -> list[str]:
    """A TSV's lines as the CoT reader splits them (on \\n only: some questions hold other line breaks)."""
    lines = path.read_bytes().decode("utf-8").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _py(src, split, **kw):
    return [_key(e) for e in src.iter_examples(split, **kw)]


def _tf(src, split, **kw):
    return [_key(e) for e in src.get_dataset(split, **kw).as_numpy_iterator()]


# ---------------------------------------------------------------------------------------------
# The rule.


def test_holdout_rule_hand_computed():
    # max(1, min(200, floor(5% of n))), none below 2 examples.
    assert [base.holdout_size(n) for n in (0, 1, 2, 39, 40, 41, 1084, 3999, 4000, 7473, 10**6)] == \
        [0, 0, 1, 1, 2, 2, 54, 199, 200, 200, 200]
    for n in (0, 1, 2, 6, 50, 1084, 7473):
        train, val = base.holdout_split(n)
        assert len(val) == base.holdout_size(n)
        assert sorted(np.concatenate([train, val]).tolist()) == list(range(n))  # disjoint and covering
        assert list(train) == sorted(train) and list(val) == sorted(val)
        again = base.holdout_split(n)
        assert (again[0] == train).all() and (again[1] == val).all()
    # The slice is the last positions of one fixed permutation (seed HOLDOUT_SEED), independent of run seeds.
    perm = np.random.default_rng(base.HOLDOUT_SEED).permutation(1084)
    assert sorted(perm[-54:].tolist()) == base.holdout_split(1084)[1].tolist()


def test_validation_source_of_every_catalog_task(cat):
    counts = collections.Counter(validation_source(r) for r in cat.enabled())
    assert counts == {"train slice": 1554 + 9, "hf:validation": 193, "tfds:validation": 73,
                      "tfds:validation[-200:]": 1}
    assert validation_source(cat.get("story_cloze")) == "tfds:validation[-200:]"  # trains on validation[:-200]
    assert validation_source(cat.get("winogrande")) == "tfds:validation"  # trains on train_xl[:30000]
    assert validation_source(cat.get("cot_gsm8k")) == "train slice"
    assert tfds_validation_split("train[:30000]") == "validation"
    assert tfds_validation_split("validation[:-200]") == "validation[-200:]"
    assert tfds_validation_split("validation[:50%]") == "validation[50%:]"
    assert tfds_validation_split("validation[100:200]") is None
    # Every source has both splits (a TFDS task whose complement is unknown would have train only).
    for kind in ("tfds", "hf", "niv2", "cot_tsv"):
        rec = next(r for r in cat.enabled() if r.loader.kind == kind)
        assert set(source_for_task(rec).splits) == {"train", "validation"}, kind


# ---------------------------------------------------------------------------------------------
# CoT: the real TSVs.


@needs_cot
def test_real_cot_validation_and_train_cover_the_file_once(cat):
    checked = 0
    for rec in cat.by_submixture("cot"):
        path = COT_DIR / rec.loader.name
        if not path.is_file():
            continue  # esnli and qed were never released with the collection (see test_sources)
        src = source_for_task(rec, cot_dir=COT_DIR)
        lines = _tsv_lines(path)
        as_key = [tuple(sorted(zip(("question", "answer", "rationale"), line.split("\t")))) for line in lines]
        train, val = _py(src, "train", shuffle=False), _py(src, "validation", shuffle=False)
        assert len(val) == base.holdout_size(len(lines)) == src.num_input_examples("validation") > 0
        assert len(train) + len(val) == len(lines)
        assert collections.Counter(train) + collections.Counter(val) == collections.Counter(as_key)
        # Disjoint: a validation example is in train only where the file repeats that very line.
        file_counts = collections.Counter(as_key)
        assert all(file_counts[v] > 1 for v in set(val) & set(train)), rec.name
        # The slice is the rule's: file positions holdout_split(n)[1], in file order when not shuffled.
        assert val == [as_key[i] for i in base.holdout_split(len(lines))[1]]
        checked += 1
    assert checked == 7


@needs_cot
def test_real_cot_validation_deterministic_and_sharded(cat):
    src = source_for_task(cat.get("stream_qasc"), cot_dir=COT_DIR)
    a = _py(src, "validation", shuffle=True, seed=3)
    assert a == _py(src, "validation", shuffle=True, seed=3)
    assert a == _tf(src, "validation", shuffle=True, seed=3)  # the tf.data path gives the same, same order
    assert a != _py(src, "validation", shuffle=True, seed=4)  # the seed orders the slice ...
    assert sorted(a) == sorted(_py(src, "validation", shuffle=True, seed=4))  # ... but does not choose it
    # A fresh source (another process) holds out the same examples.
    assert sorted(a) == sorted(_py(source_for_task(cat.get("stream_qasc"), cot_dir=COT_DIR), "validation"))
    for n in (2, 3):
        shards = [_py(src, "validation", shuffle=True, seed=3, shard_info=seqio.ShardInfo(i, n)) for i in range(n)]
        assert collections.Counter(sum(shards, [])) == collections.Counter(a)  # disjoint and covering
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
        tf_shards = [_tf(src, "validation", shuffle=True, seed=3, shard_info=seqio.ShardInfo(i, n))
                     for i in range(n)]
        assert tf_shards == shards


@needs_cot
def test_get_eval_examples_on_real_cot_validation():
    vocabulary = registration.register_all(collections=())  # the shared vocabulary, nothing registered
    try:
        flan_tasks.register_flan2022(vocabulary, cot_dir=str(COT_DIR), submixtures=("cot",),
                                     inversion_weights={"cot": 0.0})
        exs = pipeline.get_eval_examples("flan2022_cot_gsm8k_zs_opt", split="validation")
        lines = _tsv_lines(COT_DIR / "gsm8k_train.tsv")
        _, val_pos = base.holdout_split(len(lines))
        assert len(exs) == 200 == len(val_pos)
        questions = [lines[i].split("\t")[0] for i in val_pos]
        answers = [lines[i].split("\t")[1] for i in val_pos]
        # In order (shuffle=False): the i-th example asks the i-th held-out question and targets its answer.
        for ex, q, a in zip(exs, questions, answers):
            assert q in ex["inputs_pretokenized"] and a in ex["targets_pretokenized"]
            assert ex["inputs"].dtype == np.int32 and ex["inputs"][-1] == 1
        train_q = {e["question"] for e in seqio.TaskRegistry.get("flan2022_cot_gsm8k_zs_opt").source.iter_examples(
            "train", shuffle=False)}
        assert not train_q & set(questions) or len(set(lines)) < len(lines)
        # The streaming path (what training mixes) and the seqio path agree on validation too.
        task = seqio.TaskRegistry.get("flan2022_cot_gsm8k_zs_opt")
        lengths = {"inputs": 256, "targets": 128}
        ours = sorted((tuple(a.tolist()), tuple(b.tolist()))
                      for a, b in task.token_stream(sequence_length=lengths, split="validation", seed=1))
        ref = sorted((tuple(e["inputs"].tolist()), tuple(e["targets"].tolist())) for e in
                     task.get_dataset(lengths, split="validation", shuffle=True, seed=1).as_numpy_iterator())
        assert len(ours) == 200 and ours == ref
    finally:
        flan_tasks._unregister()


def test_tiny_cot_files(tmp_path):
    (tmp_path / "one_train.tsv").write_text("q\ta\tr\n")
    (tmp_path / "two_train.tsv").write_text("q1\ta1\tr1\nq2\ta2\tr2\n")
    one = cot_tsv_source("one", tmp_path, "one_train.tsv")
    assert len(_py(one, "train")) == 1 and _py(one, "validation") == []  # one example stays in train
    assert list(one.get_dataset("validation").as_numpy_iterator()) == []
    two = cot_tsv_source("two", tmp_path, "two_train.tsv")
    assert len(_py(two, "train")) == 1 == len(_py(two, "validation"))
    assert set(_py(two, "train")) != set(_py(two, "validation"))
    with pytest.raises(ValueError, match=r"unknown split 'test'"):
        _py(two, "test")


# ---------------------------------------------------------------------------------------------
# NIv2: hand-written task files in the real JSON layout.


def _write_niv2(root: Path, name: str, n: int) -> Path:
    task = {
        "Contributors": ["Test Author"],
        "Source": ["toy"],
        "URL": ["https://example.org"],
        "Categories": ["Question Answering"],
        "Reasoning": [],
        "Definition": ["Answer the question about the passage."],
        "Input_language": ["English"],
        "Output_language": ["English"],
        "Instruction_language": ["English"],
        "Domains": ["Fiction"],
        "Positive Examples": [{"input": "Passage: It rains. Question: What falls?", "output": "Rain",
                               "explanation": "Rain falls."}],
        "Negative Examples": [{"input": "Passage: x. Question: y?", "output": "z", "explanation": "Wrong."}],
        "Instances": [{"id": f"{name.split('_')[0]}-{i:04d}", "input": f"Passage: item {i}. Question: which?",
                       "output": [f"item {i}", f"#{i}"]} for i in range(n)],
        "Instance License": ["CC BY 4.0"],
    }
    (root / "tasks").mkdir(parents=True, exist_ok=True)
    path = root / "tasks" / f"{name}.json"
    path.write_text(json.dumps(task, ensure_ascii=False, indent=4), encoding="utf-8")
    return path


def _ids(examples):
    return [dict(e)["id"] for e in examples]


@pytest.mark.parametrize("n", [1, 6, 45, 4321])
def test_niv2_validation_disjoint_covering_deterministic(tmp_path, n):
    _write_niv2(tmp_path, "task950_toy", n)
    src = niv2_source("task950_toy", tmp_path)
    train, val = _ids(_py(src, "train", shuffle=False)), _ids(_py(src, "validation", shuffle=False))
    every = [f"task950-{i:04d}" for i in range(n)]
    assert len(val) == base.holdout_size(n) and not set(train) & set(val)
    assert sorted(train + val) == every  # each instance exactly once
    assert val == [every[i] for i in base.holdout_split(n)[1]]
    assert _tf(src, "validation", shuffle=True, seed=9) == _py(src, "validation", shuffle=True, seed=9)
    again = niv2_source("task950_toy", tmp_path)  # a fresh reader holds out the same instances
    assert _py(again, "validation", shuffle=True, seed=9) == _py(src, "validation", shuffle=True, seed=9)
    if n >= 45:
        for k in (2, 3):
            shards = [_ids(_py(src, "validation", shuffle=True, seed=2, shard_info=seqio.ShardInfo(i, k)))
                      for i in range(k)]
            assert sorted(sum(shards, [])) == sorted(val) and sum(map(len, shards)) == len(val)
            tf_shards = [_ids(_tf(src, "validation", shuffle=True, seed=2, shard_info=seqio.ShardInfo(i, k)))
                         for i in range(k)]
            assert tf_shards == shards


def test_niv2_max_instances_caps_train_not_validation(tmp_path):
    _write_niv2(tmp_path, "task951_cap", 300)
    full = niv2_source("task951_cap", tmp_path)
    capped = niv2_source("task951_cap", tmp_path, max_instances=20)
    assert _ids(_py(capped, "validation", shuffle=False)) == _ids(_py(full, "validation", shuffle=False))
    assert len(_py(capped, "validation")) == 15
    train = _ids(_py(capped, "train", shuffle=False))
    assert train == _ids(_py(full, "train", shuffle=False))[:20]
    assert not set(train) & set(_ids(_py(full, "validation")))
    assert capped.validate() == 35


# ---------------------------------------------------------------------------------------------
# TFDS (mock data) and HF (injected loader): the dataset's own validation split.


def _split_tagged_rte(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
    """tfds mock as_dataset: super_glue/rte examples whose premise names the split they were read from."""
    del self, decoders, read_config, shuffle_files, kwargs
    split = str(split)
    n = {"train": 9, "validation": 4}.get(split, 2)
    return tf.data.Dataset.from_tensor_slices({
        "idx": tf.range(n, dtype=tf.int32),
        "premise": tf.constant([f"{split}-{i}" for i in range(n)]),
        "hypothesis": tf.constant([f"h{i}" for i in range(n)]),
        "label": tf.constant([i % 2 for i in range(n)], dtype=tf.int64),
    })


def test_tfds_validation_uses_the_datasets_validation_split(cat, tmp_path):
    rec = cat.get("rte")
    with tfds.testing.mock_data(as_dataset_fn=_split_tagged_rte):
        src = source_for_task(rec, tfds_data_dir=tmp_path)
        val = [e["premise"].decode() for e in src.get_dataset("validation", shuffle=False).as_numpy_iterator()]
        assert val == [f"validation-{i}" for i in range(4)]
        train = [e["premise"].decode() for e in src.get_dataset("train", shuffle=False).as_numpy_iterator()]
        assert rec.loader.split.startswith("train")  # rte trains on a slice of train
        assert train == [f"{rec.loader.split}-{i}" for i in range(2)]
        # Host shards of validation: disjoint and covering, the Python path the same.
        shards = [[e["premise"].decode() for e in src.iter_examples("validation", shuffle=False,
                                                                      shard_info=seqio.ShardInfo(i, 3))]
                  for i in range(3)]
        assert sorted(sum(shards, [])) == val and all(shards)
        # story_cloze trains on validation[:-200]; it validates on the complement.
        sc = source_for_task(cat.get("story_cloze"), tfds_data_dir=tmp_path)
        assert sc.tfds_splits == {"train": "validation[:-200]", "validation": "validation[-200:]"}


def test_tfds_task_validation_through_seqio(cat, tmp_path):
    vocabulary = registration.register_all(collections=())
    task = flan_tasks._make_task(cat.get("rte"), "zs_opt", flan_tasks.DataDirs(tfds_data_dir=str(tmp_path)), 0,
                                 vocabulary)
    assert set(task.splits) == {"train", "validation"}
    with tfds.testing.mock_data(as_dataset_fn=_split_tagged_rte):
        exs = list(task.get_dataset(None, split="validation", shuffle=False, try_in_mem_cache=False)
                   .as_numpy_iterator())
    assert len(exs) == 4
    assert all(b"validation-" in e["inputs_pretokenized"] or b"/inv/" in e["template_id"] for e in exs)


def test_hf_validation_reads_the_validation_split(cat):
    calls = []

    def load(name, config, split):
        calls.append(split)
        return [{"inputs_pretokenized": f"{split} Q{i}?", "targets_pretokenized": f"A{i}",
                 "answer_choices": [f"A{i}", "B"]} for i in range({"train": 10, "validation": 5}[split])]

    rec = cat.get("social_i_qa_Generate_answer")
    src = hf_source(rec.name, rec.loader.name, rec.loader.config, rec.loader.split, rec.loader.field_map,
                    load_fn=load)
    assert src.num_input_examples("validation") == 5 and calls == ["validation"]  # train not loaded for it
    val = [dict(e)["inputs"] for e in _py(src, "validation", shuffle=False)]
    assert val == [f"validation Q{i}?" for i in range(5)]
    assert [dict(e)["inputs"] for e in _tf(src, "validation", shuffle=False)] == val
    assert len(_py(src, "train")) == 10 and calls == ["validation", "train"]
    shards = [_py(src, "validation", seed=1, shard_info=seqio.ShardInfo(i, 2)) for i in range(2)]
    assert sorted(dict(e)["inputs"] for e in sum(shards, [])) == sorted(val)

    def no_validation(name, config, split):
        if split == "validation":
            raise ValueError('Unknown split "validation". Should be one of [\'train\', \'test\'].')
        return load(name, config, split)

    src = hf_source(rec.name, rec.loader.name, rec.loader.config, "train", rec.loader.field_map,
                    load_fn=no_validation)
    with pytest.raises(ValueError, match=r"social_i_qa_Generate_answer.*has no split 'validation'"):
        src.num_input_examples("validation")


def test_cot_answer_em_hand_worked():
    """answer_em compares the final answers of CoT targets (our answer sentences), so a different
    rationale with the right answer counts; it is None for a task whose targets are not CoT."""
    from flan_mix.evaluation.generation import score_task
    examples = [{"targets_pretokenized": "5 + 3 = 8. That means the answer is 8.", "inputs_pretokenized": "q1"},
                {"targets_pretokenized": "Cats purr. My answer: yes.", "inputs_pretokenized": "q2"}]
    row = score_task(["Add them: 8. The final answer: 8.", "Cats bark. Which gives no."], examples)
    assert row["model_em"] == 0.0 and row["answer_em"] == 50.0
    plain = [{"targets_pretokenized": "8", "inputs_pretokenized": "q"}]
    assert score_task(["8"], plain)["answer_em"] is None


@needs_cot
def test_held_in_cot_tasks_in_the_eval_table(tmp_path):
    """evaluate_generation on a submixture's name: every registered CoT task on its held-out
    validation slice, grouped as "flan2022 cot" with its own mean row and answer_em."""
    import jax
    from flan_mix.evaluation import generation
    from flan_mix.models.build import build_model
    from flan_mix.models.t5 import T5Config
    from flan_mix.runtime import partitioning
    vocabulary = registration.register_all(collections=())
    try:
        flan_tasks.register_flan2022(vocabulary, cot_dir=str(COT_DIR), submixtures=("cot",),
                                     inversion_weights={"cot": 0.0})
        specs = registration.eval_tasks(["flan2022_cot"])  # 9 CoT datasets x (zs_opt, fs_opt)
        assert len(specs) == 18 and {s["group"] for s in specs} == {"flan2022 cot"}
        model = build_model(config=T5Config(emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32, num_encoder_layers=1,
                                            num_decoder_layers=1), vocab_size=vocabulary.vocab_size)
        params = model.init_params(jax.random.PRNGKey(0))
        rows = generation.evaluate_generation(
            model, params, mesh=partitioning.make_mesh(devices=jax.devices()[:1]), vocabulary=vocabulary,
            out_dir=str(tmp_path), task_feature_lengths={"inputs": 64, "targets": 8}, batch_size=8,
            max_examples_per_task=3, tasks=["flan2022_cot_gsm8k_zs_opt", "flan2022_stream_creak_fs_opt",
                                            "flan2022_cot_gsm8k_zs_opt"])
    finally:
        flan_tasks._unregister()
    by_task = {r["task"]: r for r in rows}
    assert len(rows) == 3 and by_task["MEAN (flan2022 cot)"]["n"] == 2 * 3
    assert all(r["answer_em"] is not None for r in rows)  # every CoT target ends in an answer sentence
    assert "answer_em" in (tmp_path / "eval_results.md").read_text()
