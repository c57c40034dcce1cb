"""Decoder-only models through the launcher, as a user runs them (real `python run.py` processes):
the decoder twin of the embedded default, and an HF Llama imported with its own tokenizer.json,
evaluated and fine-tuned on the generated mixture tokenized with that tokenizer."""
import json
import os

import pytest

from tests.test_cli_commands import SHARED, ok, run_cli

# Small everything: the point is the plumbing, not the numbers.
LENGTHS = ["--gin.TASK_FEATURE_LENGTHS={'inputs': 128, 'targets': 16}", "--gin.BATCH_SIZE=4",
           "--gin.register_generated_tasks.num_train=40", "--gin.register_generated_tasks.num_validation=6",
           "--gin.evaluate_generation.max_examples_per_task=6",
           "--gin.evaluate_generation.tasks=['gen_sort_words_eval', 'gen_larger_number_mc_eval']"]
TINY_DECODER = ["--gin.LlamaConfig.emb_dim=32", "--gin.LlamaConfig.num_layers=1", "--gin.LlamaConfig.head_dim=8",
                "--gin.LlamaConfig.mlp_dim=64"]


@pytest.mark.parametrize("prefix_lm", [False, True])
def test_decoder_default_trains_and_evaluates(tmp_path, prefix_lm):
    path = str(tmp_path / "run")
    proc = ok(run_cli("--gin_file=gin/runs/decoder_default.gin", *LENGTHS, *TINY_DECODER, "--gin.TRAIN_STEPS=3",
                      f"--gin.LlamaConfig.prefix_lm={prefix_lm}", f"--gin.MODEL_DIR='{path}'"))
    assert "LlamaConfig(" in proc.stdout and "MEAN (trained)" in proc.stdout
    with open(os.path.join(path, "metrics.jsonl")) as f:
        assert [r["step"] for r in map(json.loads, f) if "train/loss" in r] == [3]
    with open(os.path.join(path, "eval_results.json")) as f:
        rows = {r["task"]: r for r in json.load(f)["rows"]}
    assert rows["gen_larger_number_mc_eval"]["chance"] == 50.0 and rows["gen_sort_words_eval"]["n"] == 6


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED, "bbh")), reason="BBH data lives in ../shared/data")
def test_imported_hf_llama_with_its_tokenizer(tmp_path):
    """A random HF LlamaForCausalLM (GQA, BOS 1, EOS 2) saved with a byte-fallback BPE tokenizer.json:
    convert keeps the tokenizer, eval --benchmarks runs on it, and fine-tuning tokenizes the mixture
    with it."""
    transformers = pytest.importorskip("transformers")
    from tests.test_hf_vocab import _llama_style
    hf_dir, out = tmp_path / "hf", str(tmp_path / "imported")
    _llama_style(hf_dir)
    config = transformers.LlamaConfig(vocab_size=384, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
                                      pad_token_id=0, tie_word_embeddings=False)
    transformers.LlamaForCausalLM(config).save_pretrained(str(hf_dir))
    proc = ok(run_cli("convert", f"--from_hf={hf_dir}", f"--model_dir={out}"))
    assert "LlamaConfig bindings" in proc.stdout and "copied its tokenizer (tokenizer.json)" in proc.stdout
    model_gin = os.path.join(out, "model.gin")
    with open(model_gin) as f:
        text = f.read()
    assert "LlamaConfig.bos_id = 1" in text and "LlamaConfig.eos_id = 2" in text
    flags = ["--gin_file=gin/runs/default.gin", f"--gin_file={model_gin}", *LENGTHS]
    ok(run_cli("eval", "--benchmarks=bbh", "--max_examples=1", *flags, f"--gin.MODEL_DIR='{out}'"))
    with open(os.path.join(out, "eval_bbh_direct.json")) as f:
        assert json.load(f)["rows"][-1]["n"] == 27
    tuned = str(tmp_path / "tuned")
    proc = ok(run_cli("--gin_file=gin/runs/finetune.gin", f"--gin_file={model_gin}", *LENGTHS[:5],
                      "--gin.TRAIN_STEPS=2", f"--gin.MODEL_DIR='{tuned}'",
                      f"--gin.INITIAL_CHECKPOINT_PATH='{os.path.join(out, 'checkpoints', '0')}'",
                      f"--gin.register_all.tokenizer_dir='{os.path.join(out, 'tokenizer')}'",
                      "--gin.train_command.evaluate_after=False"))
    with open(os.path.join(tuned, "metrics.jsonl")) as f:
        losses = [r["train/loss"] for r in map(json.loads, f) if "train/loss" in r]
    assert len(losses) == 1 and 0 < losses[0] < 20  # logged at the last step
