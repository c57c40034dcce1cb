"""The README's launcher examples, run as a user runs them: real `python run.py ...` processes
against a small model trained once for this module (train -> eval -> infer -> convert -> inspect)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A very small model and data set: the point is the plumbing. Same flags for every command.
SMALL = ["--gin.T5Config.emb_dim=32", "--gin.T5Config.num_heads=2", "--gin.T5Config.head_dim=16",
         "--gin.T5Config.mlp_dim=64", "--gin.T5Config.num_encoder_layers=1", "--gin.T5Config.num_decoder_layers=1",
         "--gin.TASK_FEATURE_LENGTHS={'inputs': 128, 'targets': 16}", "--gin.BATCH_SIZE=4",
         "--gin.register_generated_tasks.num_train=40", "--gin.register_generated_tasks.num_validation=6",
         "--gin.evaluate_generation.max_examples_per_task=6",
         "--gin.evaluate_generation.tasks=['gen_sort_words_eval', 'gen_larger_number_mc_eval']"]


def run_cli(*args, timeout=600):
    proc = subprocess.run([sys.executable, "run.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    return proc


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cli") / "run")
    proc = ok(run_cli("train", *SMALL, "--gin.TRAIN_STEPS=2", f"--gin.MODEL_DIR='{path}'",
                      "--gin.train_command.evaluate_every_steps=1"))
    assert "MEAN (trained)" in proc.stdout  # train evaluates after training by default
    return path


def test_evaluation_during_training_is_logged(model_dir):
    with open(os.path.join(model_dir, "metrics.jsonl")) as f:
        evals = [r for r in map(json.loads, f) if any(k.startswith("eval/") for k in r)]
    assert [r["step"] for r in evals] == [1, 2]
    assert {"eval/trained/model_em", "eval/trained/model_rank", "eval/trained/chance"} <= set(evals[0])
    with open(os.path.join(model_dir, "eval", "step_2", "eval_results.json")) as f:
        rows = {r["task"]: r for r in json.load(f)["rows"]}
    assert evals[1]["eval/trained/model_em"] == rows["MEAN (trained)"]["model_em"]


def test_eval_writes_the_table_of_the_trained_model(model_dir):
    os.remove(os.path.join(model_dir, "eval_results.json"))
    proc = ok(run_cli("eval", *SMALL, f"--gin.MODEL_DIR='{model_dir}'"))
    with open(os.path.join(model_dir, "eval_results.json")) as f:
        rows = {r["task"]: r for r in json.load(f)["rows"]}
    assert set(rows) == {"gen_sort_words_eval", "gen_larger_number_mc_eval", "MEAN (trained)"}
    assert rows["gen_sort_words_eval"]["n"] == 6 and "gen_sort_words_eval" in proc.stdout
    # Multiple choice also gets rank classification over its options (two numbers to compare here).
    assert 0.0 <= rows["gen_larger_number_mc_eval"]["model_rank"] <= 100.0
    assert rows["gen_larger_number_mc_eval"]["chance"] == 50.0
    assert rows["gen_sort_words_eval"]["model_rank"] is None and rows["gen_sort_words_eval"]["chance"] is None


def test_infer_appends_and_resumes(model_dir, tmp_path):
    out = str(tmp_path / "preds.jsonl")
    args = ("infer", "--task=gen_sort_words_eval", f"--output={out}", *SMALL, f"--gin.MODEL_DIR='{model_dir}'")
    ok(run_cli(*args, "--gin.infer.max_examples=4"))
    with open(out) as f:
        first = [json.loads(line) for line in f]
    assert [r["index"] for r in first] == [0, 1, 2, 3]
    assert all(r["task"] == "gen_sort_words_eval" and r["target"] and "prediction" in r for r in first)
    proc = ok(run_cli(*args))  # all 6: keeps the 4 rows, decodes the 2 missing ones
    assert "4 already in" in proc.stdout
    with open(out) as f:
        rows = [json.loads(line) for line in f]
    assert rows[:4] == first and [r["index"] for r in rows] == list(range(6))


def test_infer_default_output_goes_to_model_dir(model_dir):
    ok(run_cli("infer", "--task=gen_larger_number_mc_eval", *SMALL, f"--gin.MODEL_DIR='{model_dir}'",
               "--gin.infer.max_examples=2"))
    assert os.path.exists(os.path.join(model_dir, "infer", "gen_larger_number_mc_eval.validation.jsonl"))


def test_convert_to_hf_and_back(model_dir, tmp_path):
    transformers = pytest.importorskip("transformers", reason="the HF round trip needs transformers")
    hf_dir, back_dir = str(tmp_path / "hf"), str(tmp_path / "back")
    ok(run_cli("convert", f"--to_hf={hf_dir}", f"--model_dir={model_dir}", *SMALL))
    model = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir)  # HF reads what we wrote
    assert model.config.d_model == 32 and model.config.num_layers == 1
    ok(run_cli("convert", f"--from_hf={hf_dir}", f"--model_dir={back_dir}"))
    with open(os.path.join(back_dir, "model.gin")) as f:
        gin_text = f.read()
    assert "T5Config.emb_dim = 32" in gin_text and "T5Config.vocab_size = " in gin_text
    # The imported checkpoint holds the same parameters as the original, bit for bit.
    from safetensors.numpy import load_file
    ok(run_cli("convert", f"--to_hf={tmp_path / 'hf2'}", f"--model_dir={back_dir}",
               "--gin_file=gin/runs/default.gin", f"--gin_file={os.path.join(back_dir, 'model.gin')}",
               *SMALL[6:]))
    a, b = load_file(os.path.join(hf_dir, "model.safetensors")), load_file(str(tmp_path / "hf2" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_convert_refuses_bad_input(model_dir, tmp_path):
    proc = run_cli("convert", "--from_hf=/nonexistent")
    assert proc.returncode == 2 and "--model_dir" in proc.stderr
    proc = run_cli("convert", f"--from_hf={tmp_path}", f"--model_dir={model_dir}")
    assert proc.returncode == 2 and "already holds checkpoints" in proc.stderr
    proc = run_cli("convert", f"--from_hf={tmp_path}", f"--model_dir={tmp_path / 'out'}")
    assert proc.returncode == 1 and "CheckpointError" in proc.stderr and "config.json" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_inspect_renders_a_task():
    proc = ok(run_cli("inspect", "--task=gen_sort_words_zs_opt", "--num_examples=2",
                      "--gin.register_generated_tasks.num_train=40"))
    assert "gen_sort_words_zs_opt" in proc.stdout


def test_unknown_task_is_a_message_not_a_traceback():
    proc = run_cli("infer", "--task=gen_sort_word_eval", "--gin.MODEL_DIR='/nonexistent'")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "gen_sort_words_eval" in proc.stderr  # the close match


SHARED = os.path.join(REPO, "..", "shared", "data")
needs_benchmarks = pytest.mark.skipif(
    not (os.path.isdir(os.path.join(SHARED, "bbh")) and os.path.isdir(os.path.join(SHARED, "mmlu"))),
    reason="the BBH and MMLU data live in ../shared/data (absent here)")


@needs_benchmarks
def test_eval_benchmarks_writes_tables_and_resumes(model_dir):
    args = ("eval", "--benchmarks=bbh,mmlu", "--max_examples=2", "--mmlu_scoring=rank", *SMALL,
            f"--gin.MODEL_DIR='{model_dir}'")
    proc = ok(run_cli(*args))
    assert "normalized average" in proc.stdout
    with open(os.path.join(model_dir, "eval_bbh_direct.json")) as f:
        bbh_rows = json.load(f)["rows"]
    assert len(bbh_rows) == 28 and bbh_rows[-1]["task"] == "MEAN" and bbh_rows[-1]["n"] == 54
    with open(os.path.join(model_dir, "eval_mmlu_val_rank.json")) as f:
        overall = json.load(f)["rows"][-1]
    assert overall["name"] == "ALL" and overall["n"] == 57 * 2 and overall["no_answer"] == 0
    log = os.path.join(model_dir, "benchmarks", "bbh_direct.predictions.jsonl")
    with open(log) as f:
        first = f.read()
    assert len(first.splitlines()) == 54
    ok(run_cli(*args))  # everything is in the predictions log already: nothing is decoded or appended again
    with open(log) as f:
        assert f.read() == first


@needs_benchmarks
def test_eval_bbh_self_consistency_votes_over_samples(model_dir):
    """--self_consistency=3: three sampled chains per question, the recorded prediction is the
    majority of their extracted answers (ties: the first seen), in its own predictions log."""
    proc = run_cli("eval", "--benchmarks=bbh", "--self_consistency=3", *SMALL, f"--gin.MODEL_DIR='{model_dir}'")
    assert proc.returncode == 2 and "--mode=cot" in proc.stderr  # refused before anything loads
    ok(run_cli("eval", "--benchmarks=bbh", "--mode=cot", "--self_consistency=3", "--temperature=1.0",
               "--max_examples=1", *SMALL, f"--gin.MODEL_DIR='{model_dir}'"))
    with open(os.path.join(model_dir, "benchmarks", "bbh_cot_sc3.predictions.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert len(records) == 27
    for rec in records:
        assert len(rec["samples"]) == 3 and len(rec["answers"]) == 3
        voting = [a for a in rec["answers"] if a is not None]
        counts = {a: voting.count(a) for a in voting}
        expected = max(counts, key=lambda a: (counts[a], -voting.index(a))) if voting else ""
        assert rec["prediction"] == expected and rec["votes"] == counts.get(expected, 0)
    # Sampling at T=1 with 3 seeds: the chains are not all one greedy path repeated.
    assert any(len(set(rec["samples"])) > 1 for rec in records)
    with open(os.path.join(model_dir, "eval_bbh_cot_sc3.json")) as f:
        assert json.load(f)["rows"][-1]["n"] == 27


@needs_benchmarks
def test_imported_hf_t5_evaluates_with_its_own_tokenizer(tmp_path):
    """A random HF T5 saved with its own SentencePiece tokenizer (trained here, 400 pieces):
    convert --from_hf copies the tokenizer beside the checkpoint, and eval (tasks and benchmarks)
    tokenizes with it. The shared vocabulary has 1,636 ids, more than this model's 512-row
    embedding, so a run that fell back to it would stop with a vocabulary-size error."""
    transformers = pytest.importorskip("transformers", reason="building the HF model needs transformers")
    torch_parameter = pytest.importorskip("torch").nn.Parameter
    from flan_mix.data import vocab
    with open(os.path.join(SHARED, "bbh", "bbh", "date_understanding.json")) as f:
        lines = [ex["input"] for ex in json.load(f)["examples"]]
    hf_dir, out = tmp_path / "hf", str(tmp_path / "imported")
    config = transformers.T5Config(vocab_size=512, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2,
                                   feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = transformers.T5ForConditionalGeneration(config)
    # transformers >= 5 ties lm_head to the embedding at construction; T5 1.1 has its own output layer.
    model.lm_head.weight = torch_parameter(model.lm_head.weight.detach().clone().normal_())
    model.save_pretrained(str(hf_dir))
    (hf_dir / "spiece.model").write_bytes(vocab.train_sentencepiece(lines, vocab_size=400))
    proc = ok(run_cli("convert", f"--from_hf={hf_dir}", f"--model_dir={out}"))
    assert "copied its tokenizer (spiece.model)" in proc.stdout
    assert os.path.exists(os.path.join(out, "tokenizer", "spiece.model"))
    flags = ["--gin_file=gin/runs/default.gin", f"--gin_file={os.path.join(out, 'model.gin')}", *SMALL[6:],
             f"--gin.MODEL_DIR='{out}'"]
    ok(run_cli("eval", "--benchmarks=bbh,mmlu", "--max_examples=1", *flags))
    with open(os.path.join(out, "eval_benchmarks.json")) as f:
        assert [r["benchmark"] for r in json.load(f)["rows"]][-1] == "normalized average"
    ok(run_cli("eval", *flags))
    with open(os.path.join(out, "eval_results.json")) as f:
        assert {r["task"] for r in json.load(f)["rows"]} >= {"gen_sort_words_eval", "gen_larger_number_mc_eval"}


@needs_benchmarks
def test_benchmark_subset_during_training(tmp_path):
    """train_command.periodic_benchmarks: every N steps, the first questions of each MMLU subject
    too; their accuracy and normalized score reach metrics.jsonl beside the eval-task means."""
    path = str(tmp_path / "run")
    ok(run_cli("train", *SMALL, "--gin.TRAIN_STEPS=1", f"--gin.MODEL_DIR='{path}'",
               "--gin.train_command.evaluate_after=False", "--gin.train_command.evaluate_every_steps=1",
               "--gin.train_command.periodic_benchmarks=['mmlu']",
               "--gin.train_command.periodic_benchmark_examples=1"))
    with open(os.path.join(path, "metrics.jsonl")) as f:
        evals = [r for r in map(json.loads, f) if "eval/mmlu_val_rank/accuracy" in r]
    with open(os.path.join(path, "eval", "step_1", "eval_mmlu_val_rank.json")) as f:
        overall = json.load(f)["rows"][-1]
    assert overall["n"] == 57 and [r["step"] for r in evals] == [1]
    assert evals[0]["eval/mmlu_val_rank/accuracy"] == overall["accuracy_examples"]
    assert evals[0]["eval/mmlu_val_rank/normalized"] == pytest.approx(100 * (overall["accuracy_examples"] - 25) / 75)
    assert "eval/trained/model_em" in evals[0]
    proc = run_cli("train", *SMALL, "--gin.TRAIN_STEPS=1", f"--gin.MODEL_DIR='{tmp_path / 'bad'}'",
                   "--gin.train_command.evaluate_every_steps=1", "--gin.train_command.periodic_benchmarks=['bbhh']")
    assert proc.returncode == 2 and "bbhh" in proc.stderr


@needs_benchmarks
def test_eval_prompts_and_score_on_the_real_bbh_data(tmp_path):
    out = str(tmp_path / "prompts.jsonl")
    ok(run_cli("eval", "prompts", "--benchmark=bbh", "--task=boolean_expressions", "--mode=cot", f"--output={out}"))
    with open(out) as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 250 and rows[0]["input"].endswith("\nA: Let's think step by step.")
    assert rows[0]["input"].count("So the answer is") == 3 and rows[0]["target"] in ("True", "False")
    # Predictions in the BBH repository's output format: 2 of 3 right on one task, 1 of 1 on another.
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    (outputs / "boolean_expressions_few_shot.json").write_text(json.dumps({"outputs": [
        {"input": "q", "prediction": "... So the answer is True.", "target": "True"},
        {"input": "q", "prediction": "So the answer is False.", "target": "False"},
        {"input": "q", "prediction": "the answer is True", "target": "False"}]}))
    (outputs / "navigate.json").write_text(json.dumps({"outputs": [
        {"input": "q", "prediction": "So the answer is Yes.", "target": "Yes"}]}))
    proc = ok(run_cli("eval", "score", "--benchmark=bbh", f"--predictions={outputs}", "--mode=cot"))
    assert "66.7" in proc.stdout and "83.3" in proc.stdout  # unweighted mean over tasks: (66.7 + 100) / 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task": "navigate", "prediction": "Yes", "target": "Yes"}\n{"task": "navigat", '
                   '"prediction": "Yes", "target": "Yes"}\n')
    proc = run_cli("eval", "score", "--benchmark=bbh", f"--predictions={bad}")
    assert proc.returncode == 1 and "bad.jsonl" in proc.stderr and ":2" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_infer_with_beam_search(model_dir, tmp_path):
    """Beam search through the launcher; with one beam it is the greedy decode."""
    outs = {}
    for beams in (1, 3):
        out = str(tmp_path / f"beams{beams}.jsonl")
        ok(run_cli("infer", "--task=gen_sort_words_eval", f"--output={out}", *SMALL, f"--gin.MODEL_DIR='{model_dir}'",
                   "--gin.infer.max_examples=3", f"--gin.infer.num_beams={beams}", "--gin.infer.length_penalty=0.6"))
        with open(out) as f:
            outs[beams] = [json.loads(line) for line in f]
    assert [r["index"] for r in outs[3]] == [0, 1, 2]
    greedy = str(tmp_path / "greedy.jsonl")
    ok(run_cli("infer", "--task=gen_sort_words_eval", f"--output={greedy}", *SMALL, f"--gin.MODEL_DIR='{model_dir}'",
               "--gin.infer.max_examples=3"))
    with open(greedy) as f:
        assert [json.loads(line)["prediction"] for line in f] == [r["prediction"] for r in outs[1]]


def test_nonfinite_loss_is_a_message_not_a_traceback(tmp_path):
    proc = run_cli("train", *SMALL, "--gin.TRAIN_STEPS=3", f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
                   "--gin.make_schedule.learning_rate=1e999", "--gin.make_schedule.warmup_steps=0")
    assert proc.returncode == 1 and "run.py: NonFiniteError:" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
