"""Flan 2022 collection: rates and caps, template families, real CoT TSVs through the pipeline, NIv2 files,
TFDS mock data, per-host shards, allow_missing_tasks."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import seqio

from flan_mix.data import pipeline, registration, templates
from flan_mix.data.data_errors import MalformedDataError
from flan_mix.data.flan import catalog as catalog_lib
from flan_mix.data.flan import flan_adapters, flan_tasks, flan_templates
from flan_mix.data.flan.rendering import RenderSpec, render_stream
from flan_mix.data.flan.sources.base import holdout_size, holdout_split

COT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flan" / "cot"


@pytest.fixture(scope="module")
def vocabulary():
    return registration.register_all(collections=())  # the shared vocabulary, nothing registered


def test_caps_and_rates_hand_worked():
    cat = catalog_lib.load_catalog()
    cot = [r for r in cat.by_submixture("cot") if r.name in ("cot_gsm8k", "stream_qasc")]
    rates = flan_tasks.submixture_task_rates(cot, "cot")
    # gsm8k 7,473 and qasc 1,084 examples (under the 100k cap): 7473/8557 and 1084/8557, split 50/50 zs/fs.
    assert rates["flan2022_cot_gsm8k_zs_opt"] == pytest.approx(0.5 * 7473 / 8557)
    assert rates["flan2022_stream_qasc_fs_opt"] == pytest.approx(0.5 * 1084 / 8557)
    # Flan 2021 cap 30k: anli_r1 16,946 and mnli_matched 30,000 (at cap) -> 16946/46946; 4 types at 25%.
    recs = [cat.get("anli_r1"), cat.get("mnli_matched")]
    rates = flan_tasks.submixture_task_rates(recs, "flan2021")
    assert rates["flan2022_anli_r1_zs_noopt"] == pytest.approx(0.25 * 16946 / 46946)
    # A dialog task far above the 200k cap counts as 200k: qrecc 63,501 vs wiki_dialog 11M -> 63501/263501.
    rates = flan_tasks.submixture_task_rates(cat.by_submixture("dialog", enabled_only=True), "dialog")
    assert rates["flan2022_qrecc_zs_opt"] == pytest.approx(0.5 * 63501 / 263501)


def test_full_registration_rates_sum_to_one(vocabulary):
    reg = flan_tasks.register_flan2022(vocabulary, allow_missing_tasks=False, cot_dir=None)
    assert len(reg.records) == 1830 and len(reg.task_names) == 72 * 4 + 193 * 4 + 1554 * 2 + 9 * 2 + 2 * 2
    for name, rates in reg.mixtures.items():
        assert sum(rates.values()) == pytest.approx(1.0), name
    submix = reg.mixtures[flan_tasks.SUBMIX_MIXTURE]
    for sub, want in flan_tasks.SUBMIX_RATES.items():
        got = sum(v for k, v in submix.items() if reg.records[k[len("flan2022_"):].rsplit("_", 2)[0]].submixture
                  == sub) if False else sum(submix[n] for n in reg.submixture_rates[sub])
        assert got == pytest.approx(want)
    # NIv2: every task estimated at 6,500 > 5k cap -> uniform.
    niv2 = reg.submixture_rates["niv2"]
    assert max(niv2.values()) == pytest.approx(min(niv2.values()))
    # Registration read no data: a CoT task without cot_dir fails only when its dataset is requested.
    with pytest.raises(Exception, match=r"cot_gsm8k.*no CoT data directory"):
        seqio.TaskRegistry.get("flan2022_cot_gsm8k_zs_opt").get_dataset(None, split="train")


SAMPLES = {
    "flan_nli": {"premise": "A dog runs.", "hypothesis": "An animal moves.", "options": flan_adapters._NLI3,
                 "answer": "yes"},
    "flan_paraphrase": {"sentence1": "a", "sentence2": "b", "options": ["no", "yes"], "answer": "no"},
    "flan_sentiment": {"text": "Great film.", "options": ["negative", "positive"], "answer": "positive"},
    "flan_topic": {"text": "Stocks fell.", "options": flan_adapters._AG, "answer": "Business"},
    "flan_classify": {"text": "Him went.", "question": "Grammatical?", "options": ["no", "yes"], "answer": "no"},
    "flan_summarize": {"text": "Long text here.", "summary": "Short."},
    "flan_translate": {"source": "Hello", "target": "Hallo", "src_lang": "English", "tgt_lang": "German"},
    "flan_reading_qa": {"context": "Paris is in France.", "question": "Where is Paris?", "answer": "France"},
    "flan_data_to_text": {"data": "name: Blue Spice", "text": "Blue Spice is a place."},
    "flan_rewrite": {"instruction": "Fix it.", "text": "hi there", "target": "Hi there"},
    "p3": {"prompt": "What is 2+2?", "answer": "4"},
    "generic_qa": {"question": "Capital of Peru?", "answer": "Lima", "options": []},
    "generic_mc": {"question": "Pick red.", "options": ["red", "blue"], "answer": "red"},
    "cot": {"question": "2+3?", "answer": "5", "rationale": "2 plus 3 is 5."},
    "niv2": {"definition": "Add.", "input": "1 1", "output": "2"},
    "dialog": {"context": "A: hi", "response": "B: hello"},
}


def test_every_family_renders_all_templates():
    cat = catalog_lib.load_catalog()
    used = {flan_templates.family_for(r.template_family, r.name) for r in cat.enabled()}
    assert used <= set(SAMPLES), used - set(SAMPLES)
    for fam in used:
        f = templates.get_family(fam)
        assert len(f.plain_templates()) == 10, fam
        for t in f.templates:
            for tt in templates.TEMPLATE_TYPES:
                out = templates.format_example(SAMPLES[fam], family=fam, template_type=tt, seed=1,
                                               exemplars=[SAMPLES[fam]], template_id=t.id, inverted=t.inverted)
                assert out["inputs"].strip() and out["targets"].strip(), (fam, t.id, tt)


def _adapter_samples():
    # Raw examples in the loaders' field layout (bytes, as the tf.data numpy iterator gives them).
    return {
        "anli_r1": {"context": b"It rained.", "hypothesis": b"It was wet.", "label": b"0"},
        "snli": {"premise": b"p", "hypothesis": b"h", "label": b"-1"},  # unlabelled -> None
        "ag_news_subset": {"title": b"T", "description": b"D", "label": b"2"},
        "arc_easy": {"question": b"Q?", "choices_text": np.array([b"x", b"y"]),
                     "choices_label": np.array([b"A", b"B"]), "answerKey": b"B"},
        "squad_v1": {"title": b"t", "context": b"c", "question": b"q", "answers": np.array([b"ans"])},
    }


def test_adapters_map_labels():
    cat = catalog_lib.load_catalog()
    import random
    out = {n: flan_adapters.adapter_for(cat.get(n))(raw, random.Random(0)) for n, raw in _adapter_samples().items()}
    assert out["anli_r1"]["answer"] == "yes"
    assert out["snli"] is None
    assert out["ag_news_subset"]["answer"] == "Business"
    assert out["arc_easy"] == {"question": "Q?", "options": ["x", "y"], "answer": "y"}
    assert out["squad_v1"]["answer"] == "ans"


@pytest.mark.skipif(not COT_DIR.is_dir(), reason=f"real CoT TSVs not found at {COT_DIR} (../shared/data absent)")
@pytest.mark.parametrize("template_type", templates.TEMPLATE_TYPES)
def test_real_cot_tsv_full_pipeline(vocabulary, template_type):
    cat = catalog_lib.load_catalog()
    dirs = flan_tasks.DataDirs(cot_dir=str(COT_DIR))
    task = flan_tasks._make_task(cat.get("stream_qasc"), template_type, dirs, 0, vocabulary)
    seqio.TaskRegistry.add_provider(task.name, task) if task.name not in seqio.TaskRegistry.names() else None
    ds = task.get_dataset({"inputs": 512, "targets": 128}, split="train", shuffle=True, seed=3,
                          try_in_mem_cache=False)
    exs = list(ds.take(20).as_numpy_iterator())
    assert len(exs) == 20
    for ex in exs:
        assert ex["task_name"] == b"stream_qasc" and ex["source"] == b"CoT"
        assert ex["template_type"].decode() == template_type
        assert ex["template_id"].startswith(b"cot/")
        assert ex["inputs"][-1] == 1 and ex["targets"][-1] == 1  # EOS
    inv = sum(b"/inv/" in e["template_id"] for e in exs)
    assert 0 < inv < 20  # input inversion at 0.3
    packed = seqio.EncDecFeatureConverter(pack=True)(
        ds.map(lambda e: {"inputs": e["inputs"], "targets": e["targets"]}).take(50),
        {"inputs": 2048, "targets": 512})
    row = next(packed.as_numpy_iterator())
    assert row["encoder_segment_ids"].max() > 1  # several examples packed into one row


def test_few_shot_prompts_drop_exemplars_to_fit():
    """A whitespace 'tokenizer' makes lengths checkable by hand: prompts that fit are untouched, longer ones lose
    exemplars (never the query or the target) until they fit or keep one."""
    cat = catalog_lib.load_catalog()
    rec = cat.get("cot_gsm8k")
    spec = RenderSpec(task=rec.name, source=rec.source, family="cot", template_type="fs_opt",
                      inversion_weight=0.0, seed=0)
    raws = [{"question": f"Question {i}: " + "word " * (5 + 7 * (i % 5)), "answer": str(i),
             "rationale": "step " * (3 + i % 4)} for i in range(40)]
    words = {"inputs": str.split, "targets": str.split}
    adapter = flan_adapters.adapter_for(rec)
    free = list(render_stream(iter(raws), spec, adapter, words, None))
    budget = sorted(len(r["inputs_ids"]) for r in free)[len(free) // 2]
    fitted = list(render_stream(iter(raws), spec, adapter, words, budget))
    shortened = 0
    for a, b in zip(free, fitted):
        assert b["targets"] == a["targets"] and b["inputs_ids"] == b["inputs"].split()
        if len(a["inputs_ids"]) + 1 <= budget:
            assert b["inputs"] == a["inputs"]
        else:
            shortened += 1
            assert len(b["inputs_ids"]) < len(a["inputs_ids"]) and b["inputs"].endswith(a["inputs"][-40:])
    assert shortened >= len(free) // 3
    assert sum(len(b["inputs_ids"]) + 1 <= budget for b in fitted) > sum(len(a["inputs_ids"]) + 1 <= budget
                                                                          for a in free)


def _write_niv2(d: Path) -> None:
    task = {
        "Definition": ["Reverse the given word."],
        "Positive Examples": [{"input": "abc", "output": "cba", "explanation": "reversed"}],
        "Negative Examples": [],
        "Instances": [{"id": f"task999-{i}", "input": w, "output": [w[::-1]]} for i, w in
                      enumerate(["dog", "cat", "bird", "fish", "cow", "hen"])],
    }
    (d / "tasks").mkdir()
    (d / "tasks" / "task999_reverse_word.json").write_text(json.dumps(task))


def test_niv2_files_load_through_registered_task(tmp_path, vocabulary):
    _write_niv2(tmp_path)
    rec = catalog_lib.load_catalog().by_submixture("niv2")[0]
    import dataclasses
    rec = dataclasses.replace(rec, name="task999_reverse_word",
                              loader=dataclasses.replace(rec.loader, name="task999_reverse_word.json"))
    dirs = flan_tasks.DataDirs(niv2_dir=str(tmp_path))
    task = flan_tasks._make_task(rec, "fs_opt", dirs, 0, vocabulary)
    exs = list(task.get_dataset(None, split="train", shuffle=False).as_numpy_iterator())
    train_pos, val_pos = holdout_split(6)  # one instance of six is held out for validation
    assert len(exs) == 5
    first = exs[0]["inputs_pretokenized"].decode()
    assert "Reverse the given word." in first and "abc" in first and "cba" in first  # definition + exemplar
    targets = ["god", "tac", "drib", "hsif", "woc", "neh"]
    assert [e["targets_pretokenized"].decode() for e in exs] == [targets[i] for i in train_pos]
    val = list(task.get_dataset(None, split="validation", shuffle=False).as_numpy_iterator())
    assert [e["targets_pretokenized"].decode() for e in val] == [targets[i] for i in val_pos]


def test_malformed_niv2_file_raises_its_own_error_through_seqio(tmp_path, vocabulary):
    """A malformed task file read through seqio's tf.data pipeline (what eval and `run.py inspect --task` read)
    raises MalformedDataError naming the file, line and column, not TensorFlow's wrapper around it."""
    _write_niv2(tmp_path)
    path = tmp_path / "tasks" / "task999_reverse_word.json"
    text = json.dumps(json.loads(path.read_text()), indent=1)
    lines = text.splitlines()
    k = next(i for i, line in enumerate(lines) if '"task999-3"' in line)
    lines[k] = lines[k].rstrip(",")  # drop the comma after the id: line k + 2 (1-based) starts unexpectedly
    path.write_text("\n".join(lines))
    rec = catalog_lib.load_catalog().by_submixture("niv2")[0]
    import dataclasses
    rec = dataclasses.replace(rec, name="task999_reverse_word",
                              loader=dataclasses.replace(rec.loader, name="task999_reverse_word.json"))
    task = flan_tasks._make_task(rec, "zs_opt", flan_tasks.DataDirs(niv2_dir=str(tmp_path)), 0, vocabulary)
    seqio.TaskRegistry.add_provider(task.name, task)
    try:
        with pytest.raises(MalformedDataError) as e:
            pipeline.get_eval_examples(task.name, split="train")
    finally:
        seqio.TaskRegistry.remove(task.name)
    assert str(e.value).startswith(f"{path}:line {k + 2}, column ") and "invalid JSON" in str(e.value)
    assert "PyFunc" not in str(e.value) and "Traceback" not in str(e.value)
    with pytest.raises(MalformedDataError, match=f"line {k + 2}, column"):  # the Python streaming path too
        next(task.token_stream(sequence_length={"inputs": 64, "targets": 16}, seed=0))


@pytest.mark.parametrize("template_type", ["zs_opt", "fs_opt"])
def test_python_token_stream_equals_seqio_task_output(tmp_path, vocabulary, template_type):
    """StreamingTask.token_stream (what training mixes) gives exactly the examples seqio's Task.get_dataset gives,
    as a multiset: same rendering, same tokens, same trim and EOS."""
    _write_niv2(tmp_path)
    rec = catalog_lib.load_catalog().by_submixture("niv2")[0]
    import dataclasses
    rec = dataclasses.replace(rec, name="task999_reverse_word",
                              loader=dataclasses.replace(rec.loader, name="task999_reverse_word.json"))
    task = flan_tasks._make_task(rec, template_type, flan_tasks.DataDirs(niv2_dir=str(tmp_path)), 0, vocabulary)
    lengths = {"inputs": 24, "targets": 4}  # short enough that some examples are trimmed
    ours = sorted((tuple(a.tolist()), tuple(b.tolist()))
                  for a, b in task.token_stream(sequence_length=lengths, seed=5, num_epochs=1))
    ref = sorted((tuple(e["inputs"].tolist()), tuple(e["targets"].tolist()))
                 for e in task.get_dataset(lengths, split="train", shuffle=True, seed=5).as_numpy_iterator())
    assert len(ours) == 6 - holdout_size(6) and ours == ref
    assert all(a[-1] == 1 and b[-1] == 1 and len(a) <= 24 and len(b) <= 4 for a, b in ours)


def test_tfds_task_on_mock_data(vocabulary):
    import tensorflow_datasets as tfds
    rec = catalog_lib.load_catalog().get("sst2")
    task = flan_tasks._make_task(rec, "zs_opt", flan_tasks.DataDirs(), 0, vocabulary)
    with tfds.testing.mock_data(num_examples=12):
        exs = list(task.get_dataset(None, split="train", shuffle=False, try_in_mem_cache=False)
                   .as_numpy_iterator())
    assert len(exs) == 12
    for e in exs:
        if b"/inv/" in e["template_id"]:  # input inversion: the label is given, the review text is asked for
            assert e["template_id"].startswith(b"flan_sentiment/inv/") and e["targets_pretokenized"]
        else:
            assert (e["targets_pretokenized"] in (b"negative", b"positive")
                    or e["targets_pretokenized"][:1] in b"(0123456789ABCDEFGHIJ")


@pytest.mark.skipif(not COT_DIR.is_dir(), reason=f"real CoT TSVs not found at {COT_DIR}")
def test_host_shards_disjoint_and_covering(vocabulary):
    rec = catalog_lib.load_catalog().get("stream_qasc")
    task = flan_tasks._make_task(rec, "zs_opt", flan_tasks.DataDirs(cot_dir=str(COT_DIR)), 0, vocabulary)
    seen = []
    for i in range(3):
        ds = task.get_dataset(None, split="train", shuffle=True, seed=5,
                              shard_info=seqio.ShardInfo(index=i, num_shards=3), try_in_mem_cache=False)
        seen.append([e["targets_pretokenized"] + e["inputs_pretokenized"] for e in ds.as_numpy_iterator()])
    sets = [set(s) for s in seen]
    total = sum(len(s) for s in seen)
    assert total == 1084 - holdout_size(1084)  # train: the file less its held-out validation slice
    # Render seeds come from content, so an example renders the same on any host: compare rendered text.
    one = task.get_dataset(None, split="train", shuffle=True, seed=5, try_in_mem_cache=False)
    whole = [e["targets_pretokenized"] + e["inputs_pretokenized"] for e in one.as_numpy_iterator()]
    assert sorted(whole) == sorted(seen[0] + seen[1] + seen[2])
    assert not (sets[0] & sets[1]) or len(set(whole)) < len(whole)


def test_allow_missing_tasks_drops_and_renormalizes(tmp_path, vocabulary, caplog):
    for f in ("gsm8k_train.tsv", "aqua_train.tsv"):
        (tmp_path / f).write_text("q1\ta1\tr1\nq2\ta2\tr2\n")
    with caplog.at_level(logging.WARNING):
        reg = flan_tasks.register_flan2022(vocabulary, allow_missing_tasks=True, cot_dir=str(tmp_path),
                                           submixtures=("cot",))
    assert sorted(reg.records) == ["cot_gsm8k", "stream_aqua"]
    assert len(reg.dropped) == 7
    assert any("dropped 7 of 9 cot tasks" in r.message for r in caplog.records)
    rates = reg.mixtures["flan2022_cot"]
    assert sum(rates.values()) == pytest.approx(1.0)
    assert rates["flan2022_cot_gsm8k_zs_opt"] == pytest.approx(0.5 * 7473 / (7473 + 2728))
    assert "flan2022_stream_esnli_zs_opt" not in seqio.TaskRegistry.names()


def test_unknown_flan_name_says_how_to_register_the_collection(monkeypatch):
    monkeypatch.setattr(flan_tasks, "_REGISTERED", None)  # as in a run with only the generated collection
    with pytest.raises(pipeline.UnknownTaskError, match=r"add 'flan2022' to the collections .*register_all"):
        pipeline.get_task_or_mixture("flan2022_no_such_task_zs_opt")
