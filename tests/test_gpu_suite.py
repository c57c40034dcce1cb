"""benchmarks/gpu_suite.py: its --small run end to end, as the GPU machine would run it.

The GPU machines have jax, flax, optax and orbax but no TensorFlow or seqio (gin-config travels
there as a wheel), so the script runs in a subprocess with those (and flan_mix.data) blocked from
import. The run's JSON
must hold every correctness check, passing (T5 and decoder-only cases: GQA, prefix-LM), the
device/version/date fields, the attention table (decoder rows included), a T5 train step per
attention implementation and the decoder-only (LLaMA-style, prefix-LM) train step. No timing is
asserted (CPU timings of the Pallas interpreter mean nothing): only that they were measured.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import gpu_suite
from benchmarks import gpu_suite_decoder
from tests import test_flash_attention

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "gpu_suite.py")
BLOCKED = ("tensorflow", "tensorflow_datasets", "seqio", "flan_mix.data")

# sys.modules[name] = None makes every `import name` raise ImportError.
WRAPPER = """
import runpy, sys
for name in {blocked!r}:
    sys.modules[name] = None
sys.argv = [{script!r}, *{args!r}]
runpy.run_path({script!r}, run_name="__main__")
"""


def run_suite(args, timeout):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("OUT", None)        # --out decides; $OUT belongs to the device machine
    env.pop("XLA_FLAGS", None)  # several fake CPU devices would not divide the tiny batch
    code = WRAPPER.format(blocked=BLOCKED, script=SCRIPT, args=list(args))
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_suite") / "suite.json"
    proc = run_suite(["--small", "--out", str(out)], timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    with open(out) as f:
        return json.load(f), proc.stdout


def test_records_device_versions_date_and_command(small_run):
    results, _ = small_run
    env = results["environment"]
    assert env["device"]["platform"] == "cpu" and env["device"]["kind"]
    assert env["device"]["count"] >= 1
    for name in ("python", "jax", "jaxlib", "flax", "optax"):
        assert env["versions"][name], name
    assert "orbax-checkpoint" in env["versions"]  # None where orbax is absent
    date = datetime.datetime.fromisoformat(env["date"])
    assert date.utcoffset() == datetime.timedelta(0)
    assert "--small" in env["argv"]
    assert results["mode"] == "small" and results["timings_meaningful"] is False
    assert results["elapsed_s"] > 0


def test_every_correctness_check_ran_and_passed(small_run):
    results, _ = small_run
    section = results["sections"]["correctness"]
    assert section["status"] == "ok" and section["all_passed"]
    rows = section["rows"]
    wanted = gpu_suite.SMALL_CHECKS + gpu_suite.SMALL_DECODER_CHECKS
    assert [r["case"]["name"] for r in rows] == [c.name for c in wanted]
    for row in rows:
        case = row["case"]
        names = {"out", "dq", "dk", "dv"} | ({"d_table"} if case["bias"] else set())
        assert set(row["errors"]) == names, case["name"]
        for name, err in row["errors"].items():
            assert err["normalised"] < row["tol"], (case["name"], name, err)
            assert err["max_abs"] >= 0
        assert row["passed"] and not row["problems"]
    # What the checks must cover, read off the recorded cases.
    cases = [r["case"] for r in rows]
    assert any(c["causal"] for c in cases)
    assert any(c["packed"] for c in cases)
    assert {"encoder", "decoder"} <= {c["bias"] for c in cases}
    assert {"float32", "bfloat16"} <= {c["dtype"] for c in cases}
    assert any(c["q_len"] != c["kv_len"] for c in cases)
    block = gpu_suite.SMALL_BLOCKS.block_q
    assert {True, False} <= {c["q_len"] % block == 0 for c in cases}  # on and off the tiles
    # Decoder-only: grouped-query (and multi-query) attention, prefix-LM on packed causal rows.
    kv = {(c["heads"], c["kv_heads"]) for c in cases if c["kv_heads"]}
    assert any(1 < h // k < h for h, k in kv) and any(k == 1 for _, k in kv), kv
    prefix = [c for c in cases if c["prefix"]]
    assert prefix and all(c["causal"] and c["packed"] for c in prefix)
    assert any(c["kv_heads"] and c["kv_heads"] < c["heads"] for c in prefix)
    assert {"float32", "bfloat16"} <= {c["dtype"] for c in cases if c["kv_heads"]}


def test_prefix_flags_per_segment_are_seeded_and_cover_none_all_and_part():
    segs = np.array([[1] * 9 + [2] * 7 + [3] * 5 + [0] * 3, [1] * 6 + [2] * 10 + [3] * 8], np.int32)
    flags = np.asarray(gpu_suite_decoder.segment_prefix_flags(np.random.default_rng(3), segs))
    again = np.asarray(gpu_suite_decoder.segment_prefix_flags(np.random.default_rng(3), segs))
    np.testing.assert_array_equal(flags, again)
    sizes = []
    for b in range(2):
        for seg in (1, 2, 3):
            f = flags[b][segs[b] == seg]
            k = int(f.sum())
            np.testing.assert_array_equal(f, np.arange(len(f)) < k)  # a prefix: ones, then zeros
            sizes.append((k, len(f)))
    assert flags[0, -3:].sum() == 0  # padding is never flagged
    assert sizes[0][0] == 0 and sizes[1][0] == sizes[1][1]  # none, all, then part ...
    assert all(0 < k < n for k, n in (sizes[2], sizes[3]))
    assert sizes[4][0] == 0 and sizes[5][0] == sizes[5][1]


def test_attention_table_reuses_the_benchmark(small_run):
    results, _ = small_run
    section = results["sections"]["attention"]
    assert section["status"] == "ok"
    by_impl = {}
    for row in section["rows"]:
        by_impl.setdefault(row["impl"], []).append(row)
    assert set(by_impl) == {"pallas", "xla", "cudnn", "pallas_gpu"}
    for row in by_impl["pallas"] + by_impl["xla"]:
        assert row["fwd_ms"] > 0 and row["fwd_bwd_ms"] > 0, row
    assert all(row["note"].startswith("n/a") for row in by_impl["cudnn"])
    # The decoder rows: grouped-query causal and packed prefix-LM, timed on pallas and xla.
    decoder = [r for r in section["rows"] if r["scenario"] in ("gqa_causal", "prefix_lm")]
    assert {(r["scenario"], r["impl"]) for r in decoder if "fwd_ms" in r} == {
        (s, i) for s in ("gqa_causal", "prefix_lm") for i in ("pallas", "xla")}
    assert all(r["kv_heads"] < r["heads"] for r in decoder)


def test_train_step_is_timed_for_each_attention_implementation(small_run):
    results, output = small_run
    section = results["sections"]["train_step"]
    assert section["status"] == "ok"
    runs = {r["attention_impl"]: r for r in section["runs"]}
    assert set(runs) == {"pallas", "xla"}
    for impl, run in runs.items():
        assert run["step_s"] > 0 and run["positions_per_s"] > 0, impl
        assert 0 < run["fill"] <= 1
        assert run["model_flops_per_step"]["total"] > 0
        assert "mfu" in run and run["mfu"] is None and run["peak_note"] == "unknown peak"
        assert run["params_match"], (run["params"], run["params_expected"])
        assert math.isfinite(run["loss_first"]) and math.isfinite(run["loss_last"])
    # Same model, same batch, same init: the implementations agree on the loss.
    assert runs["pallas"]["loss_first"] == pytest.approx(runs["xla"]["loss_first"], rel=2e-2)
    assert "NOT meaningful" in output


def test_decoder_train_step_is_timed(small_run):
    results, output = small_run
    section = results["sections"]["decoder_train_step"]
    assert section["status"] == "ok"
    assert section["model"]["name"] == gpu_suite_decoder.LLAMA_TINY.name
    assert section["mode"] == "prefix_lm" and section["optimizer"] == "adamw"
    assert "6 * P * B * L" in section["flop_formula"]
    [run] = section["runs"]
    assert run["attention_impl"] == "pallas"
    for key in ("step_s", "positions_per_s", "real_tokens_per_s", "target_tokens_per_s",
                "model_tflops_per_s", "loss_first", "loss_last"):
        assert math.isfinite(run[key]) and run[key] > 0, key
    assert 0 < run["fill"] <= 1 and run["segments"] >= section["batch"]
    flops = run["model_flops_per_step"]
    assert flops["total"] == flops["dense"] + flops["attention"] > 0
    assert run["mfu"] is None and run["params_match"], (run["params"], run["params_expected"])
    assert "Decoder train step: llama_tiny" in output


def test_sections_that_cannot_fit_are_skipped_and_fail_the_run(tmp_path):
    """A budget smaller than the start-up time: nothing fits, every section says why, and the
    exit code is 1 because no correctness check ran."""
    out = tmp_path / "suite.json"
    proc = run_suite(["--small", "--budget_s", "0.5", "--out", str(out)], timeout=120)
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-3000:]
    results = json.loads(out.read_text())
    for name in ("correctness", "attention", "train_step", "decoder_train_step"):
        section = results["sections"][name]
        assert section["status"] == "skipped" and "left" in section["reason"], name
    assert results["verdict"].startswith("FAIL")


def test_tolerances_match_the_kernel_tests():
    assert gpu_suite.F32_TOL == test_flash_attention.F32_TOL
    assert gpu_suite.BF16_TOL == test_flash_attention.BF16_TOL


def test_t5_base_parameter_count_matches_the_published_model():
    # google/t5-v1_1-base has 247,577,856 parameters (Hugging Face's count of the checkpoint).
    assert gpu_suite.expected_param_count(gpu_suite.T5_BASE) == 247_577_856


def test_train_step_flops_hand_computed():
    """One layer per stack, emb 2, one head of 2, mlp 3, vocab 10, batch 1, lengths 4 / 2.

    Matmul params on the inputs: encoder 4*2*2 + 3*2*3 = 34, plus decoder cross k, v 2*2*2 = 8:
    42. On the targets: decoder 6*2*2 + 3*2*3 = 42, plus logits 2*10 = 20: 62.
    dense = 6 * (42 * 4 + 62 * 2) = 1752; attention = 12 * 2 * (4^2 + 2^2 + 2*4) = 672.
    """
    dims = gpu_suite.ModelDims("hand", vocab=10, emb=2, heads=1, head_dim=2, mlp=3,
                               enc_layers=1, dec_layers=1)
    flops = gpu_suite.train_step_flops(dims, batch=1, lengths=(4, 2))
    assert flops == {"dense": 1752.0, "attention": 672.0, "total": 2424.0}


def test_llama_parameter_counts_match_the_published_models():
    # meta-llama/Llama-3.2-1B (tied embedding): 1,235,814,400; Llama-2-7b-hf: 6,738,415,616.
    assert gpu_suite_decoder.expected_param_count(gpu_suite_decoder.LLAMA_1B) == 1_235_814_400
    llama2_7b = gpu_suite_decoder.DecoderDims("llama2_7b", vocab=32000, emb=4096, layers=32,
                                              heads=32, kv_heads=32, head_dim=128, mlp=11008,
                                              tied=False)
    assert gpu_suite_decoder.expected_param_count(llama2_7b) == 6_738_415_616


def test_decoder_train_step_flops_hand_computed():
    """One layer, emb 2, 2 query heads of 1 on 1 kv head, mlp 3, vocab 10, batch 1, length 4.

    Matmul params: q, o 2 * 2 * 1 * 2 = 8; k, v 2 * 2 * 1 * 1 = 4; SwiGLU 3 * 2 * 3 = 18;
    logits 2 * 10 = 20: 50. dense = 6 * 50 * 4 = 1200; attention = 12 * 1 * 1 * 2 * 1 * 4^2 = 384.
    """
    dims = gpu_suite_decoder.DecoderDims("hand", vocab=10, emb=2, layers=1, heads=2, kv_heads=1,
                                         head_dim=1, mlp=3, tied=True)
    flops = gpu_suite_decoder.train_step_flops(dims, batch=1, length=4)
    assert flops == {"dense": 1200.0, "attention": 384.0, "total": 1584.0}


def test_synthetic_prefix_lm_rows_equal_the_decoder_packer():
    """The suite's numpy rows (no flan_mix.data on the GPU machine) are what flan_mix.data's
    prefix_lm packer writes for the same examples: each row's segments, read back as (inputs,
    targets), packed next-fit into rows of the same length."""
    from flan_mix.data import decoder_packing

    length, bos = 96, 7
    batch = gpu_suite_decoder.synthetic_prefix_lm_batch(np.random.default_rng(0), 3, length,
                                                        vocab=50, bos_id=bos, eos_id=1)
    for b in range(3):
        seg = batch["decoder_segment_ids"][b]
        examples = []
        for s in range(1, seg.max() + 1):
            tokens = batch["decoder_target_tokens"][b][seg == s]
            weights = batch["decoder_loss_weights"][b][seg == s]
            assert tokens[-1] == 1 and weights[-1] == 1 and weights[0] == 0
            examples.append((tokens[weights == 0], tokens[weights == 1]))
        assert len(examples) >= 2 and (seg == 0).sum() < length // 2
        [packed] = decoder_packing.pack_decoder_batches(
            examples, "prefix_lm", {"inputs": length // 2, "targets": length - length // 2},
            batch_size=1, max_open_rows=1, bos_id=bos)
        for name, want in packed.items():
            np.testing.assert_array_equal(batch[name][b], want[0], err_msg=name)


def test_peak_flops_by_device_kind():
    assert gpu_suite.peak_flops("NVIDIA H200") == 989e12
    assert gpu_suite.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert gpu_suite.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu_suite.peak_flops("cpu") is None
