"""Benchmark scripts run end to end in their quick modes, as a user would start them.

Only what a run must produce is checked: the printed ratio, a result JSON with device, versions,
date and command, and the like-for-like checks the figures rest on. Timings are never asserted
(DESIGN.md): they are only required to have been measured.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(name, args, timeout):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", name), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def llama_parameters(vocab, emb, layers, heads, kv_heads, head_dim, mlp):
    """Hand count of an untied LLaMA: embedding and lm_head, per layer q/k/v/o, SwiGLU's three
    matrices and two RMSNorm scales, then the final norm."""
    per_layer = emb * heads * head_dim * 2 + emb * kv_heads * head_dim * 2 + 3 * emb * mlp + 2 * emb
    return 2 * vocab * emb + layers * per_layer + emb


@pytest.fixture(scope="module")
def train_step_quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("decoder_train_step") / "result.json"
    # ~15 s on an idle 2-core machine; the timeout leaves room for one shared with trainings.
    proc = run_script("decoder_train_step.py", ["--quick", "--threads", "1", "--xla-single-thread", "--out", str(out)],
                      timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    with open(out) as f:
        return json.load(f), proc.stdout


def test_train_step_quick_prints_the_ratio_and_the_loss_check(train_step_quick):
    result, stdout = train_step_quick
    assert "ratio ours/HF tokens/s = " in stdout
    assert "first-step loss  ours " in stdout and "agree at" in stdout
    row = result["train_step"]
    assert f"ratio ours/HF tokens/s = {row['ratio_ours_over_hf']:.2f}x" in stdout


def test_train_step_quick_records_device_versions_date_and_command(train_step_quick):
    result, _ = train_step_quick
    assert result["device"]["platform"] == "cpu" and result["device"]["kind"]
    for name in ("python", "jax", "jaxlib", "flax", "optax", "torch", "transformers"):
        assert result["versions"][name], name
    date = datetime.datetime.fromisoformat(result["date"])
    assert date.utcoffset() == datetime.timedelta(0)
    assert "--quick" in result["argv"] and "decoder_train_step.py" in result["command"]
    assert result["cpu"]["torch_threads"] == 1
    assert "intra_op_parallelism_threads=1" in result["cpu"]["xla_flags"]  # --xla-single-thread took effect
    assert len(result["cpu"]["load_average_at_start"]) == 3 and len(result["cpu"]["load_average_at_end"]) == 3


def test_train_step_quick_compares_like_for_like(train_step_quick):
    result, _ = train_step_quick
    row, cfg = result["train_step"], result["settings"]["config"]
    assert row["parameters"] == cfg["parameters"] == llama_parameters(
        cfg["vocab_size"], cfg["emb_dim"], cfg["num_layers"], cfg["num_heads"], cfg["num_kv_heads"],
        cfg["head_dim"], cfg["mlp_dim"])
    assert cfg["num_kv_heads"] < cfg["num_heads"] and not cfg["tie_embeddings"]  # GQA, untied, as documented
    assert row["batch"] == 2 and row["length"] == 128 and row["tokens_per_step"] == 256
    assert row["hf_attn_implementation"] == "sdpa" and cfg["attention_impl"] == "xla"

    check = row["check"]
    assert check["loss_agrees"] and check["step1_loss_rel_diff"] <= 1e-4
    assert check["step1_grad_norm_rel_diff"] <= 1e-4
    assert check["step2_loss_rel_diff"] <= 1e-4  # one AdamW update each kept them together
    # Both sides average over the batch * (length - 1) predictions; HF's small random init gives
    # near-uniform logits, so the mean cross entropy sits near log(vocab), not at a sum.
    assert check["predicted_tokens"] == 2 * 127
    assert abs(check["step1_loss_ours"] - math.log(cfg["vocab_size"])) < 0.5
    assert check["step2_loss_ours"] < check["step1_loss_ours"]  # a real update on the same batch


def test_train_step_quick_measured_both_sides(train_step_quick):
    result, _ = train_step_quick
    row = result["train_step"]
    repeats = result["settings"]["repeats"]
    for side in ("ours", "hf"):
        assert len(row[f"{side}_times_s"]) == len(row[f"{side}_cpu_times_s"]) == repeats
        assert row[f"{side}_tokens_per_s"] > 0 and row[f"{side}_cpu_s"] >= 0
    assert math.isclose(row["ratio_ours_over_hf"], row["ours_tokens_per_s"] / row["hf_tokens_per_s"], rel_tol=1e-9)
    assert result["target_met"] == (row["ratio_ours_over_hf"] >= result["target_ratio"])
