"""curate export (tasks and mixtures -> records, resumable) and JSONL files as seqio tasks, trained on through a real
`python run.py train`."""
import json
import os

import pytest
import seqio

from flan_mix.curation import export
from flan_mix.curation.records import prompt_text, read_records
from flan_mix.data import instruction_records, jsonl_task, pipeline
from flan_mix.data.generated import seqio_tasks
from tests.test_cli_commands import SMALL, ok, run_cli

TASK = "gen_sort_words_zs_opt"
OTHER = "gen_larger_number_mc_zs_noopt"


@pytest.fixture(scope="module")
def vocabulary():
    # Few examples per task: rendering is lazy, but each task renders its whole split on first use.
    seqio_tasks.register_generated_tasks(num_train=12, num_validation=4)
    return seqio_tasks.registered_config().vocabulary


def test_export_fields_and_resume_after_a_crash(vocabulary, tmp_path):
    full, cut = str(tmp_path / "full.jsonl"), str(tmp_path / "cut.jsonl")
    assert export.export(TASK, full, max_examples=8) == {"written": 8, "already_done": 0}
    records = read_records(full)
    examples = pipeline.get_eval_examples(TASK, split="train", max_examples=8)
    assert [r["id"] for r in records] == [f"{TASK}:{i}" for i in range(8)]
    for rec, ex in zip(records, examples):
        assert prompt_text(rec) == ex["inputs_pretokenized"]  # the split loses nothing
        assert rec["output"] == ex["targets_pretokenized"]
        assert rec["task"] == TASK and rec["ability"] == seqio_tasks.task_info(TASK)["ability"] != ""
    assert any(r["input"] for r in records)  # the templates put a blank line before the words
    # A run killed while writing line 5 leaves 4 lines and half of one; the rerun finishes the file.
    with open(full) as f:
        lines = f.readlines()
    with open(cut, "w") as f:
        f.write("".join(lines[:4]) + lines[4][:20])
    assert export.export(TASK, cut, max_examples=8) == {"written": 4, "already_done": 4}
    with open(cut) as f:
        assert f.read() == "".join(lines)  # same records, same order, no duplicates


def test_export_a_mixture_task_by_task(vocabulary, tmp_path):
    name = "test_export_mixture"
    if name not in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.add(name, [(OTHER, 3.0), (TASK, 1.0)])
    out = str(tmp_path / "mix.jsonl")
    assert export.export(name, out, max_examples=3)["written"] == 6
    assert [r["id"] for r in read_records(out)] == [f"{t}:{i}" for t in sorted([TASK, OTHER]) for i in range(3)]
    with pytest.raises(ValueError, match="--split=test: task 'gen_larger_number_mc_zs_noopt' has no such split"):
        export.export(name, out, split="test")
    with pytest.raises(pipeline.UnknownTaskError, match="Did you mean: gen_sort_words_zs_opt"):
        export.export("gen_sort_word_zs_opt", out)


def test_split_prompt():
    assert export.split_prompt("Sort these.\n\nb a\n\nc") == ("Sort these.", "b a\n\nc")
    assert export.split_prompt("One line.") == ("One line.", "")


def test_jsonl_task_reads_records_and_names_bad_lines(vocabulary, tmp_path):
    path = tmp_path / "set.jsonl"
    good = [{"id": "1", "instruction": "Add.", "input": "2 3", "output": "5"},
            {"id": "2", "instruction": "Negate.", "input": "", "output": "-4", "skipped": "empty output"},
            {"id": "3", "instruction": "Echo.", "input": "", "output": "hi", "error": "oracle failed"},
            {"id": "4", "instruction": "Echo.", "input": "", "output": "yo"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in good))
    jsonl_task.register_jsonl_task("test_jsonl_set", str(path), vocabulary)
    got = pipeline.get_eval_examples("test_jsonl_set", split="train")
    assert [(e["inputs_pretokenized"], e["targets_pretokenized"]) for e in got] == [("Add.\n\n2 3", "5"),
                                                                                   ("Echo.", "yo")]
    assert vocabulary.decode(got[0]["targets"].tolist()) == "5" and got[0]["targets"][-1] == 1  # EOS appended
    path.write_text(json.dumps(good[0]) + "\n" + '{"id": "2", "instruction": 7, "input": "", "output": ""}\n')
    with pytest.raises(instruction_records.RecordError, match=r"set\.jsonl:2: field 'instruction' must be a string"):
        jsonl_task.register_jsonl_task("test_jsonl_set", str(path), vocabulary)
    with pytest.raises(jsonl_task.JsonlTaskError, match="already a registered task of a collection"):
        jsonl_task.register_jsonl_task(TASK, str(tmp_path / "set.jsonl"), vocabulary)


def test_training_runs_on_a_registered_file(vocabulary, tmp_path):
    """gin register_all.jsonl_tasks + MIXTURE_OR_TASK_NAME: a curated file trains like any task (real run.py)."""
    records, run = str(tmp_path / "recs.jsonl"), str(tmp_path / "run")
    export.export(TASK, records, max_examples=12)
    with open(records, "a") as f:  # a record a stage gave up on: not training data
        f.write(json.dumps({"id": "broken", "instruction": "x", "input": "", "output": "y", "error": "timeout"}) + "\n")
    proc = ok(run_cli("train", *SMALL, "--gin.TRAIN_STEPS=3", f"--gin.MODEL_DIR='{run}'",
                      f"--gin.register_all.jsonl_tasks={{'my_set': '{records}'}}", "--gin.MIXTURE_OR_TASK_NAME='my_set'",
                      "--gin.train_command.evaluate_after=False", timeout=300))
    assert "left out 1 record(s) carrying 'error' or 'skipped' (not training data); 12 kept" in proc.stderr
    with open(os.path.join(run, "metrics.jsonl")) as f:
        losses = [r["train/loss"] for r in map(json.loads, f) if "train/loss" in r]
    assert len(losses) == 1 and 0 < losses[0] < 20  # logged at step 3
    with open(os.path.join(run, "config.gin")) as f:
        assert "'my_set'" in f.read()
