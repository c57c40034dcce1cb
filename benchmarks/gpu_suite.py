"""One GPU suite: what a session with a lent GPU runs, in one call, in under 9.5 minutes.

    python benchmarks/gpu_suite.py [--budget_s 510] [--out PATH] [--small]

Sections, in order; each one checks the time left before it starts, skips with a printed
reason when it cannot fit, and records its own exception without stopping the others:
  1. correctness  the Pallas kernel on this device against flan_mix.kernels.reference: output and
                  dq, dk, dv and the T5 bias-table gradient; causal, packed rows with padding,
                  the fused T5 bias (encoder and decoder), cross attention, f32 and bf16, lengths
                  on and off the block size; decoder-only: grouped-query attention (8 query heads
                  on 2 kv heads, one multi-query case) and prefix-LM packed rows with a prefix
                  per segment (none, all or part of it, seeded), head dims 64 and 128.
  2. attention    benchmarks/attention.py's table: pallas vs XLA, cuDNN and JAX's Pallas kernel;
                  T5 scenarios at --attn_lengths, and the decoder rows at L=2048, D=128 (4 query
                  heads per kv head): gqa_causal (cuDNN runs GQA natively) and prefix_lm on packed
                  rows (pallas vs XLA; cuDNN and JAX's kernel n/a, with the reason).
  3. train_step   a T5 train step (fwd + bwd + Adafactor) on synthetic packed batches, for each
                  attention implementation: step time, tokens/s, model FLOPs and MFU.
  4. decoder_train_step  the decoder-only row (benchmarks/gpu_suite_decoder.py): DecoderOnlyModel
                  in prefix-LM mode, Llama 3.2 1B's shape (gin/models/llama_1b.gin: 1.24B
                  parameters, 32 heads on 8 kv heads), batch 2 x 2048 of synthetic packed
                  prefix-LM rows, bf16 activations, AdamW, pallas vs xla attention: step time,
                  tokens/s, MFU with FLOPs = 6 * matmul params * positions + dense attention
                  (12 * B * layers * heads * head_dim * L^2, PaLM's convention, as the T5 row).
One JSON file gets the device, the versions, the date, the command line and every result:
--out PATH if given, else $OUT/gpu_suite_<device>.json when OUT is set, else
benchmarks/results/gpu_suite_<device>.json. It is rewritten after each section, so a run that is
killed still leaves what it finished.

Time: --budget_s (510 s) is when nothing new starts; the process stops itself at --budget_s +
--grace_s (555 s). Time is held back for the train steps (60 s per T5 implementation, 75 s per
decoder one: guesses, as nothing has run on a GPU yet), so the attention table stops first
(its rows are in priority order: L=2048 T5 rows, the decoder rows, then L=512), and the T5 row
cannot eat the decoder row's time. Expected wall time on an H200, AN ESTIMATE: 7.5-9 minutes
(imports ~15 s, 25 correctness cases ~100 s, attention table to its deadline at ~240 s, T5 rows
~100 s, decoder rows ~130 s), i.e. most of the cap.

Exit code: 0 when every correctness check ran and passed; 1 when one failed, errored or was
skipped (0 when --sections leaves correctness out); 3 when the hard time limit
(--budget_s plus --grace_s) stopped the run.

--small: tiny shapes, a tiny T5 and a one-layer tiny LLaMA (decoder row on pallas only), for a
CPU (the Pallas kernel then runs in interpret mode, as in the tests) or a quick smoke test. On a
CPU the timings mean nothing, and it says so.

On a lent GPU (device tool), one call, output and JSON under $OUT. The image has no gin-config
(flan_mix's models are gin-configurable): first, here, `echo /.whl/ >> .git/info/exclude;
python3 -m pip download --no-deps -d .whl gin-config==0.5.0`; then carry [".whl"] and run
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
    export PYTHONPATH=/tmp/site && \
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_suite.py 2>&1 | tee $OUT/gpu_suite.log
with timeout_s 600 (the suite stops itself at 555 s); with less device time, pass a smaller
--budget_s (the attention table shrinks first, then the train rows are skipped).

Nothing here imports TensorFlow, seqio or flan_mix.data: the GPU machines have none of them
(tests/test_gpu_suite.py runs this script with them blocked). The training API is used in two
functions only, build_train_step() here and gpu_suite_decoder.build_decoder_train_step().
"""
from __future__ import annotations

import time

_PROCESS_START = time.perf_counter()  # the budget counts from here, imports included

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import attention as attention_bench  # noqa: E402
from benchmarks import gpu_suite_decoder as decoder_bench  # noqa: E402
from flan_mix.kernels import reference  # noqa: E402
from flan_mix.kernels.flash_attention import BlockSizes, flash_attention  # noqa: E402

# ----------------------------------------------------------------------------- constants

# Tolerances on the normalised max error max|got - want| / max|want|, the measure of
# tests/test_flash_attention.py (tests/test_gpu_suite.py checks the first two stay equal to its):
# * F32_TOL: exact f32 arithmetic in kernel and reference (the CPU interpreter); they differ only
#   in summation order.
# * BF16_TOL: bf16 inputs; the kernel rounds p and dS to bf16 before its matmuls and writes bf16
#   results: 5 bf16 eps (2^-8).
# * TF32_TOL: f32 inputs on a GPU. Triton's dot on f32 operands defaults to TF32 (10 mantissa
#   bits) and the kernel does not ask for more, so f32 on the GPU gets the bf16 reasoning with
#   TF32's eps: 5 * 2^-10 ~= 4.9e-3. The truth is always computed at HIGHEST precision.
F32_TOL = 1e-4
BF16_TOL = 2e-2
TF32_TOL = 5e-3

# Dense bf16 peak FLOP/s from the vendors' datasheets, by jax device_kind (substring match, first
# hit wins). MFU is reported against these; None means "unknown peak" and no MFU.
PEAK_BF16_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L4", 121e12),
    ("TPU v6 lite", 918e12),
    ("TPU v5p", 459e12),
    ("TPU v5 lite", 197e12),
    ("TPU v4", 275e12),
)


@dataclasses.dataclass(frozen=True)
class ModelDims:
    """The T5 1.1 shape this suite times; build_train_step maps it onto the model's config."""
    name: str
    vocab: int
    emb: int
    heads: int
    head_dim: int
    mlp: int
    enc_layers: int
    dec_layers: int
    num_buckets: int = 32
    max_distance: int = 128


T5_BASE = ModelDims("t5_1_1_base", vocab=32128, emb=768, heads=12, head_dim=64, mlp=2048,
                    enc_layers=12, dec_layers=12)
T5_TINY = ModelDims("t5_tiny", vocab=256, emb=64, heads=2, head_dim=32, mlp=128,
                    enc_layers=2, dec_layers=2)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that differs between the full (GPU) run and --small."""
    check_cases: tuple
    check_blocks: BlockSizes | None   # None: the backend's defaults (what training runs)
    attn_cases: tuple                 # (Scenario, Shape) pairs for the attention table
    attn_iters: int
    model: ModelDims
    train_batch: int
    train_lengths: tuple[int, int]    # (inputs, targets)
    train_impls: tuple[str, ...]
    train_steps: int                  # timed steps per repeat
    train_repeats: int
    decoder_model: decoder_bench.DecoderDims
    decoder_batch: int
    decoder_length: int
    decoder_impls: tuple[str, ...]
    # Rough costs, to decide whether something can still start (a larger measured cost replaces
    # them). Guesses for an H200 until a GPU run has measured them.
    attn_row_s: float
    train_impl_s: float
    decoder_impl_s: float


# ----------------------------------------------------------------------------- correctness


@dataclasses.dataclass(frozen=True)
class CheckCase:
    name: str
    dtype: str                  # "float32" or "bfloat16"
    q_len: int
    kv_len: int
    causal: bool = False
    packed: bool = False        # segment ids: packed rows of several segments, then padding
    bias: str | None = None     # None, "encoder" (bidirectional) or "decoder" (unidirectional)
    prefix: bool = False        # prefix-LM flags per packed segment (needs causal and packed)
    batch: int = 2
    heads: int = 4
    kv_heads: int | None = None  # fewer than heads: grouped-query attention; None: heads
    head_dim: int = 64
    num_buckets: int = 32
    max_distance: int = 128
    sm_scale: float = 1.0
    blocks: BlockSizes | None = None  # overrides Settings.check_blocks


# Hardware cases: T5's head dim, bucket count and max distance, the GPU's default tiles (128 x 64
# forward), lengths that are multiples of 128 and lengths that are not. At 512 and above the
# fused bias visits all three of its regimes (far past, band, far future).
_MIXED_TILES = BlockSizes(block_q=32, block_k=16, block_q_dkv=16, block_k_dkv=32, block_q_dq=32,
                          block_k_dq=16)
GPU_CHECKS = tuple(
    case
    for dtype in ("float32", "bfloat16")
    for case in (
        CheckCase(f"encoder_packed_bias_{dtype}", dtype, 512, 512, packed=True, bias="encoder"),
        CheckCase(f"encoder_packed_bias_ragged_{dtype}", dtype, 333, 333, packed=True,
                  bias="encoder"),
        CheckCase(f"decoder_packed_bias_{dtype}", dtype, 256, 256, causal=True, packed=True,
                  bias="decoder"),
        CheckCase(f"decoder_packed_bias_ragged_{dtype}", dtype, 200, 200, causal=True,
                  packed=True, bias="decoder"),
        CheckCase(f"cross_packed_{dtype}", dtype, 128, 512, packed=True),
        CheckCase(f"cross_packed_ragged_{dtype}", dtype, 100, 333, packed=True),
        CheckCase(f"causal_ragged_{dtype}", dtype, 1000, 1000, causal=True, sm_scale=0.125),
    )
) + (
    CheckCase("decoder_packed_bias_d128_bfloat16", "bfloat16", 384, 384, causal=True,
              packed=True, bias="decoder", head_dim=128),
    CheckCase("encoder_packed_bias_mixed_tiles_bfloat16", "bfloat16", 300, 300, packed=True,
              bias="encoder", blocks=_MIXED_TILES),
)

# Decoder-only (LLaMA-style) hardware cases: grouped-query attention (8 query heads on 2 kv
# heads; one multi-query case), sm_scale = 1/sqrt(D), causal packed rows; prefix-LM rows whose
# segments get their own prefixes (none, all or part: see gpu_suite_decoder.segment_prefix_flags),
# alone and combined with GQA as DecoderOnlyModel runs them. Lengths on and off the 128-row
# tiles. Head dim 128 (Llama 2 7B, Llama 3 8B) in bf16 only, as the T5 list does: the models
# train in bf16, and f32 tiles of 128 columns may not fit the GPU's shared memory.
_GQA = dict(heads=8, kv_heads=2, sm_scale=0.125)
_D128 = dict(head_dim=128, sm_scale=128 ** -0.5)
GPU_DECODER_CHECKS = tuple(
    case
    for dtype in ("float32", "bfloat16")
    for case in (
        CheckCase(f"gqa_causal_packed_ragged_{dtype}", dtype, 333, 333, causal=True,
                  packed=True, **_GQA),
        CheckCase(f"prefix_packed_{dtype}", dtype, 512, 512, causal=True, packed=True,
                  prefix=True, sm_scale=0.125),
        CheckCase(f"prefix_gqa_packed_ragged_{dtype}", dtype, 700, 700, causal=True,
                  packed=True, prefix=True, **_GQA),
    )
) + (
    CheckCase("gqa_causal_packed_d128_bfloat16", "bfloat16", 512, 512, causal=True, packed=True,
              **(_GQA | _D128)),
    CheckCase("prefix_gqa_packed_ragged_d128_bfloat16", "bfloat16", 700, 700, causal=True,
              packed=True, prefix=True, **(_GQA | _D128)),
    CheckCase("prefix_mqa_packed_ragged_bfloat16", "bfloat16", 1000, 1000, causal=True,
              packed=True, prefix=True, kv_heads=1, sm_scale=0.125),
)

# --small: the tests' scale. 16-wide tiles so every case spans several tiles; 8 buckets up to
# distance 16 so short rows still reach the saturated bias regimes.
_SMALL = dict(heads=2, head_dim=16, num_buckets=8, max_distance=16)
SMALL_CHECKS = (
    CheckCase("causal_float32", "float32", 48, 48, causal=True, sm_scale=0.25, **_SMALL),
    CheckCase("encoder_packed_bias_ragged_float32", "float32", 50, 50, packed=True,
              bias="encoder", **_SMALL),
    CheckCase("decoder_packed_bias_ragged_float32", "float32", 70, 70, causal=True, packed=True,
              bias="decoder", **_SMALL),
    CheckCase("encoder_packed_bias_bfloat16", "bfloat16", 64, 64, packed=True, bias="encoder",
              **_SMALL),
    CheckCase("decoder_packed_bias_bfloat16", "bfloat16", 64, 64, causal=True, packed=True,
              bias="decoder", **_SMALL),
    CheckCase("cross_packed_ragged_bfloat16", "bfloat16", 40, 56, packed=True, **_SMALL),
)
# --small decoder-only cases, two to keep the CPU run short: GQA (4 on 2) under per-segment
# prefixes, exact in f32 off the tiles; multi-query causal packed rows in bf16 on the tiles.
_SMALL_DEC = dict(heads=4, head_dim=16, sm_scale=0.25)
SMALL_DECODER_CHECKS = (
    CheckCase("prefix_gqa_packed_ragged_float32", "float32", 70, 70, causal=True, packed=True,
              prefix=True, kv_heads=2, **_SMALL_DEC),
    CheckCase("mqa_causal_packed_bfloat16", "bfloat16", 64, 64, causal=True, packed=True,
              kv_heads=1, **_SMALL_DEC),
)
SMALL_BLOCKS = BlockSizes(block_q=16, block_k=16, block_q_dkv=16, block_k_dkv=16, block_q_dq=16,
                          block_k_dq=16)


def packed_segment_ids(rng: np.random.Generator, batch: int, q_len: int, kv_len: int):
    """q and kv segment ids of packed rows: segments 1..n of random lengths, then 0-padding.

    Each row gets its own segment count and lengths. q and kv use the same segment numbers with
    independent lengths (cross attention); for self-attention (q_len == kv_len) they are equal.
    """
    q_ids = np.zeros((batch, q_len), np.int32)
    kv_ids = np.zeros((batch, kv_len), np.int32)
    for b in range(batch):
        n = int(rng.integers(2, 5))
        for ids, length in ((q_ids, q_len), (kv_ids, kv_len)):
            used = int(length * rng.uniform(0.75, 0.95))  # the rest of the row is padding
            cuts = np.sort(rng.choice(np.arange(1, used), size=n - 1, replace=False))
            for seg, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, used]), start=1):
                ids[b, lo:hi] = seg
        if q_len == kv_len:
            kv_ids[b] = q_ids[b]
    return jnp.asarray(q_ids), jnp.asarray(kv_ids)


def check_inputs(case: CheckCase, seed: int):
    """Fresh random q, k, v, table, output cotangent, segment ids and prefix flags (never zeros).

    segs is None or (q ids, kv ids); prefix is None or [B, L] flags drawn after the segment ids
    from the same seeded generator (so the cases without a prefix keep their segments).
    """
    keys = jax.random.split(jax.random.PRNGKey(seed), 5)
    dtype = jnp.dtype(case.dtype)
    qshape = (case.batch, case.q_len, case.heads, case.head_dim)
    kvshape = (case.batch, case.kv_len, case.kv_heads or case.heads, case.head_dim)
    # With sm_scale = 1 (T5), scale q as T5's projection init does (1/sqrt(D)), so the logits
    # have a realistic spread either way rather than saturating the softmax.
    q = jax.random.normal(keys[0], qshape)
    if case.sm_scale == 1.0:
        q = q / math.sqrt(case.head_dim)
    q = q.astype(dtype)
    k = jax.random.normal(keys[1], kvshape).astype(dtype)
    v = jax.random.normal(keys[2], kvshape).astype(dtype)
    table = jax.random.normal(keys[3], (case.heads, case.num_buckets), jnp.float32)
    cotangent = jax.random.normal(keys[4], qshape, jnp.float32)
    segs = prefix = None
    rng = np.random.default_rng(seed)
    if case.packed:
        segs = packed_segment_ids(rng, case.batch, case.q_len, case.kv_len)
    if case.prefix:
        if not (case.packed and case.causal and case.q_len == case.kv_len):
            raise ValueError(f"{case.name}: prefix needs causal, packed self-attention")
        prefix = jnp.asarray(decoder_bench.segment_prefix_flags(rng, np.asarray(segs[0])))
    return q, k, v, table, cotangent, segs, prefix


def _fwd_bwd(attn, cotangent, use_table: bool, **kwargs):
    """jit of (q, k, v, table) -> (out, (dq, dk, dv, d_table)) for one attention function."""
    def f(q, k, v, table):
        return attn(q, k, v, bias_table=table if use_table else None, **kwargs)

    @jax.jit
    def run(q, k, v, table):
        out, vjp = jax.vjp(f, q, k, v, table)
        return out, vjp(cotangent.astype(out.dtype))
    return run


def tolerance(dtype: str) -> tuple[float, str]:
    if dtype == "bfloat16":
        return BF16_TOL, "bf16"
    if jax.default_backend() == "cpu":
        return F32_TOL, "f32 (exact, interpreter)"
    return TF32_TOL, "f32 via TF32 matmuls"


def check_case(case: CheckCase, blocks: BlockSizes | None, seed: int) -> dict:
    """Kernel vs reference on one case: errors of out, dq, dk, dv, d_table and pass/fail."""
    q, k, v, table, cotangent, segs, prefix = check_inputs(case, seed)
    kwargs = dict(causal=case.causal, sm_scale=case.sm_scale,
                  bidirectional=case.bias != "decoder", max_distance=case.max_distance)
    if segs is not None:
        kwargs.update(q_segment_ids=segs[0], kv_segment_ids=segs[1])
    if prefix is not None:
        kwargs["prefix"] = prefix
    use_table = case.bias is not None
    blocks = case.blocks or blocks
    kernel = _fwd_bwd(lambda *a, **kw: flash_attention(*a, block_sizes=blocks, **kw),
                      cotangent, use_table, **kwargs)
    start = time.perf_counter()
    out, grads = jax.block_until_ready(kernel(q, k, v, table))
    kernel_s = time.perf_counter() - start
    # The truth: the same (possibly bf16-rounded) inputs in f32, every matmul at full f32.
    f32 = lambda x: x.astype(jnp.float32)
    with jax.default_matmul_precision("highest"):
        truth = _fwd_bwd(reference.reference_attention, cotangent, use_table, **kwargs)
        want_out, want_grads = truth(f32(q), f32(k), f32(v), table)

    tol, tol_basis = tolerance(case.dtype)
    names = ("out", "dq", "dk", "dv", "d_table") if use_table else ("out", "dq", "dk", "dv")
    inputs = (q, q, k, v, table)
    errors, problems = {}, []
    for name, got, want, like in zip(names, (out, *grads), (want_out, *want_grads), inputs):
        got32, want32 = np.asarray(got, np.float32), np.asarray(want, np.float32)
        if got.shape != like.shape or got.dtype != like.dtype:
            problems.append(f"{name}: {got.dtype}{got.shape}, expected {like.dtype}{like.shape}")
        if not np.all(np.isfinite(got32)):
            problems.append(f"{name}: non-finite values")
        abs_err = float(np.max(np.abs(got32 - want32)))
        errors[name] = dict(max_abs=abs_err,
                            normalised=abs_err / max(float(np.max(np.abs(want32))), 1e-30))
        if not errors[name]["normalised"] < tol:  # NaN fails too
            problems.append(f"{name}: error {errors[name]['normalised']:.2e} >= tol {tol:.0e}")
    return dict(case=dataclasses.asdict(case) | {"blocks": _blocks_dict(blocks)},
                errors=errors, tol=tol, tol_basis=tol_basis, passed=not problems,
                problems=problems, first_call_s=round(kernel_s, 3))


def _blocks_dict(blocks: BlockSizes | None):
    return None if blocks is None else dataclasses.asdict(blocks)


def run_correctness(settings: Settings, deadline: float, log) -> dict:
    rows = []
    for i, case in enumerate(settings.check_cases):
        if time.perf_counter() >= deadline:
            rows.append(dict(case=dataclasses.asdict(case) | {"blocks": None}, passed=False,
                             skipped="time budget used up", errors={}, problems=["not run"]))
        else:
            try:
                rows.append(check_case(case, settings.check_blocks, seed=1000 + i))
            except Exception as e:  # one case's compile failure must not hide the others
                rows.append(dict(case=dataclasses.asdict(case) | {"blocks": None}, passed=False,
                                 errors={}, problems=[_one_line(e)],
                                 traceback=traceback.format_exc(limit=8)))
        log(_check_line(rows[-1]))
    failed = [r["case"]["name"] for r in rows if not r["passed"]]
    return dict(rows=rows, all_passed=not failed, failed=failed,
                metric="max|got - want| / max|want| per tensor; truth = f32 XLA reference at "
                       "HIGHEST matmul precision on the same inputs")


def _check_line(row) -> str:
    c = row["case"]
    errs = row.get("errors", {})
    cells = "".join(f"{errs[n]['normalised']:9.1e}" if n in errs else f"{'-':>9}"
                    for n in ("out", "dq", "dk", "dv", "d_table"))
    worst_abs = max((e["max_abs"] for e in errs.values()), default=None)
    flags = ("C" if c["causal"] else "-") + ("S" if c["packed"] else "-") + \
        {"encoder": "E", "decoder": "D", None: "-"}[c["bias"]] + \
        ("P" if c.get("prefix") else "-")
    heads = f"{c['heads']}/{c.get('kv_heads') or c['heads']}"
    tol = row.get("tol")
    status = "PASS" if row["passed"] else ("SKIP" if row.get("skipped") else "FAIL")
    extra = "" if row["passed"] else "  " + "; ".join(row.get("problems", []))[:160]
    dtype = {"float32": "f32", "bfloat16": "bf16"}.get(c["dtype"], c["dtype"])
    worst = "-" if worst_abs is None else format(worst_abs, ".1e")
    return (f"{c['name']:<42}{dtype:>5}{c['q_len']:>6}{c['kv_len']:>6}{heads:>6}"
            f"{c['head_dim']:>5}  {flags}{cells}{worst:>9}"
            f"{'-' if tol is None else format(tol, '.0e'):>7}  {status}{extra}")


CHECK_HEADER = (f"{'case':<42}{'dtype':>5}{'Lq':>6}{'Lk':>6}{'H/Hkv':>6}{'D':>5}  {'CSBP'}"
                f"{'out':>9}{'dq':>9}{'dk':>9}{'dv':>9}{'d_table':>9}{'max|abs|':>9}{'tol':>7}"
                "  result")
CHECK_LEGEND = ("CSBP: causal / segment ids (packed, padded) / T5 bias (E encoder, D decoder) / "
                "prefix-LM flags per segment; H/Hkv: query / key-value heads. "
                "Columns out..d_table: max|got-want|/max|want| (tol applies to these); "
                "max|abs|: worst absolute error.")


# ----------------------------------------------------------------------------- attention table


def run_attention(settings: Settings, deadline: float, log) -> dict:
    """benchmarks/attention.py's table; rows that cannot start before the deadline are skipped."""
    # Leave one row's time before the deadline: a row started at the deadline would overrun it.
    rows = attention_bench.benchmark_rows(
        settings.attn_cases, ("pallas", "xla", "cudnn", "pallas_gpu"), jnp.bfloat16,
        settings.attn_iters, check_max_len=0, deadline=deadline - settings.attn_row_s,
        progress=lambda r: log(_attention_progress(r)))
    targets = []
    if jax.default_backend() == "gpu":
        targets = attention_bench.target_summary(rows) + \
            decoder_bench.decoder_attention_summary(rows)
    return dict(rows=rows, dtype="bfloat16", flop_convention=attention_bench.FLOP_CONVENTION,
                targets=targets)


def _attention_progress(row) -> str:
    state = row.get("note") or f"fwd {row['fwd_ms']:.3f} ms, fwd+bwd {row['fwd_bwd_ms']:.3f} ms"
    heads = f"H={row['heads']}/{row.get('kv_heads', row['heads'])}"
    return (f"  {row['scenario']} L={row['length']} D={row['head_dim']} {heads} "
            f"{row['impl']}: {state}")


# ----------------------------------------------------------------------------- train step


def synthetic_packed_batch(rng: np.random.Generator, batch: int, lengths: tuple[int, int],
                           vocab: int) -> dict[str, np.ndarray]:
    """A packed batch with the features of seqio's EncDecFeatureConverter.

    Each row packs examples (inputs of 1/16..1/2 of the row, targets of 1/16..1/2 of theirs)
    until the next one would not fit in either stream; the rest is padding, as real packing
    leaves. Token ids avoid 0 (padding) and 1 (EOS), except the EOS that ends each target.
    """
    enc_len, dec_len = lengths
    names = ("encoder_input_tokens", "encoder_segment_ids", "encoder_positions",
             "decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights",
             "decoder_segment_ids", "decoder_positions")
    out = {k: np.zeros((batch, enc_len if k.startswith("encoder") else dec_len), np.int32)
           for k in names}
    for b in range(batch):
        e_pos = d_pos = 0
        for seg in range(1, 10_000):
            e = int(rng.integers(max(1, enc_len // 16), max(2, enc_len // 2)))
            d = int(rng.integers(max(1, dec_len // 16), max(2, dec_len // 2)))
            if e_pos + e > enc_len or d_pos + d > dec_len:
                break
            es, ds = slice(e_pos, e_pos + e), slice(d_pos, d_pos + d)
            out["encoder_input_tokens"][b, es] = rng.integers(2, vocab, e)
            out["encoder_segment_ids"][b, es] = seg
            out["encoder_positions"][b, es] = np.arange(e)
            targets = rng.integers(2, vocab, d)
            targets[-1] = 1
            out["decoder_target_tokens"][b, ds] = targets
            out["decoder_input_tokens"][b, ds] = np.concatenate([[0], targets[:-1]])
            out["decoder_loss_weights"][b, ds] = 1
            out["decoder_segment_ids"][b, ds] = seg
            out["decoder_positions"][b, ds] = np.arange(d)
            e_pos, d_pos = e_pos + e, d_pos + d
    return out


def gin_version() -> str:
    """flan_mix's model and train modules are gin-configurable, so gin-config must be importable.

    The GPU image lacks it: carry its wheel (pure Python), as the module docstring says.
    """
    try:
        import gin  # noqa: F401
    except ImportError as e:
        raise SystemExit("gpu_suite: gin-config is not installed. On the GPU machine, carry its wheel: "
                         "here `python3 -m pip download --no-deps -d .whl gin-config==0.5.0`, there start "
                         "with `python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl "
                         "&& export PYTHONPATH=/tmp/site`.") from e
    from importlib import metadata
    return f"gin-config {metadata.version('gin-config')}"


def build_train_step(dims: ModelDims, batch_size: int, lengths: tuple[int, int],
                     attention_impl: str, seed: int = 0):
    """THE ONE PLACE THAT USES THE TRAINING API (adapt it when that API changes).

    Returns (step_fn, state, device_batch): step_fn(state, device_batch) -> (state, metrics)
    runs one jitted fwd + bwd + Adafactor update (the old state is donated), with dropout off
    and bf16 activations; device_batch is a synthetic packed batch already on the devices.
    """
    import flax.linen as nn
    from flan_mix.models.build import build_model
    from flan_mix.models.t5 import T5Config
    from flan_mix.runtime import partitioning
    from flan_mix.train import optim
    from flan_mix.train.trainer import Trainer

    config = T5Config(vocab_size=dims.vocab, emb_dim=dims.emb, num_heads=dims.heads,
                      head_dim=dims.head_dim, mlp_dim=dims.mlp,
                      num_encoder_layers=dims.enc_layers, num_decoder_layers=dims.dec_layers,
                      relative_attention_num_buckets=dims.num_buckets,
                      relative_attention_max_distance=dims.max_distance, dropout_rate=0.0,
                      dtype="bfloat16")
    tx, schedule = optim.make_optimizer("adafactor", optim.make_schedule("constant", 1e-3))
    mesh = partitioning.make_mesh()
    rules = partitioning.logical_axis_rules()
    trainer = Trainer(build_model(config, attention_impl=attention_impl), tx, mesh, rules,
                      schedule=schedule)
    host_batch = synthetic_packed_batch(np.random.default_rng(seed), batch_size, lengths,
                                        dims.vocab)
    _, shardings = trainer.abstract_state()
    state = trainer.init_state(seed)
    compiled = trainer.compile_train_step(shardings, dropout=False)
    device_batch = partitioning.host_batch_to_global(host_batch, mesh)

    def step_fn(state, device_batch):
        with mesh, nn.logical_axis_rules(rules):
            return compiled(state, device_batch)
    return step_fn, state, device_batch


def matmul_params(dims: ModelDims) -> dict[str, int]:
    """Parameters of the matmuls, by the tokens they multiply (embedding lookups excluded).

    Per encoder layer: q, k, v, o (4 * emb * heads * head_dim) and GeGLU wi_0, wi_1, wo
    (3 * emb * mlp). Per decoder layer: self-attention q, k, v, o, cross-attention q and o, GeGLU
    on the target tokens; cross-attention k and v on the input tokens. Untied logits: emb * vocab.
    """
    hd = dims.heads * dims.head_dim
    return dict(
        on_inputs=dims.enc_layers * (4 * dims.emb * hd + 3 * dims.emb * dims.mlp)
        + dims.dec_layers * 2 * dims.emb * hd,
        on_targets=dims.dec_layers * (6 * dims.emb * hd + 3 * dims.emb * dims.mlp)
        + dims.emb * dims.vocab)


def expected_param_count(dims: ModelDims) -> int:
    """All parameters: matmuls + token embedding + two relative-position tables + RMSNorm scales
    (2 per encoder layer, 3 per decoder layer, one final norm per stack). Checked against the
    built model, so a wrong mapping of ModelDims onto the config shows."""
    norms = dims.emb * (2 * dims.enc_layers + 3 * dims.dec_layers + 2)
    return (sum(matmul_params(dims).values()) + dims.vocab * dims.emb
            + 2 * dims.heads * dims.num_buckets + norms)


def train_step_flops(dims: ModelDims, batch: int, lengths: tuple[int, int]) -> dict[str, float]:
    """Model FLOPs of one train step (fwd + bwd), counted analytically over every position.

    dense     = 6 * (P_inputs * B * L_in + P_targets * B * L_tgt), with P_* from matmul_params:
                2 FLOPs per multiply-add forward, 4 backward (input and weight gradients).
    attention = 12 * B * heads * head_dim * (enc_layers * L_in^2
                                             + dec_layers * (L_tgt^2 + L_tgt * L_in)):
                q k^T and p v are 2 * Lq * Lk * heads * head_dim FLOPs each forward, x3 with the
                backward. Counted dense: the causal half and cross-segment pairs of packed rows
                are included, as a model with a full mask computes them (PaLM's MFU convention),
                and the flash kernel's backward recomputation is not counted.
    Padding positions count (the step computes them); the fill is reported beside.
    """
    enc_len, dec_len = lengths
    p = matmul_params(dims)
    dense = 6.0 * (p["on_inputs"] * batch * enc_len + p["on_targets"] * batch * dec_len)
    attn = 12.0 * batch * dims.heads * dims.head_dim * (
        dims.enc_layers * enc_len ** 2 + dims.dec_layers * (dec_len ** 2 + dec_len * enc_len))
    return dict(dense=dense, attention=attn, total=dense + attn)


def peak_flops(device_kind: str) -> float | None:
    for name, peak in PEAK_BF16_FLOPS:
        if name.lower() in device_kind.lower():
            return peak
    return None


def time_train_step(step_fn, state, batch, steps: int, repeats: int):
    """(first-call seconds incl. compile, per-repeat mean step seconds, first and last loss).

    Steps run back to back with one sync per repeat, as in training; the batch stays on the
    device, so host-to-device copies are not timed.
    """
    start = time.perf_counter()
    state, metrics = step_fn(state, batch)
    first_loss = float(metrics["loss"])  # syncs
    compile_s = time.perf_counter() - start
    state, metrics = step_fn(state, batch)  # one more warm-up: buffers settle after donation
    jax.block_until_ready((state, metrics))
    step_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = step_fn(state, batch)
        jax.block_until_ready((state, metrics))
        step_times.append((time.perf_counter() - start) / steps)
    return compile_s, step_times, first_loss, float(metrics["loss"])


def train_one(settings: Settings, impl: str) -> dict:
    dims, batch, lengths = settings.model, settings.train_batch, settings.train_lengths
    step_fn, state, device_batch = build_train_step(dims, batch, lengths, impl)
    real_tokens = int(np.count_nonzero(np.asarray(device_batch["encoder_input_tokens"]))
                      + np.count_nonzero(np.asarray(device_batch["decoder_loss_weights"])))
    return measure_train_step(
        impl, step_fn, state, device_batch, settings, positions=batch * sum(lengths),
        real_tokens=real_tokens, flops=train_step_flops(dims, batch, lengths),
        params_expected=expected_param_count(dims))


def decoder_train_one(settings: Settings, impl: str) -> dict:
    dims, batch, length = settings.decoder_model, settings.decoder_batch, settings.decoder_length
    step_fn, state, device_batch = decoder_bench.build_decoder_train_step(dims, batch, length,
                                                                          impl)
    segments = np.asarray(device_batch["decoder_segment_ids"])
    result = measure_train_step(
        impl, step_fn, state, device_batch, settings, positions=batch * length,
        real_tokens=int(np.count_nonzero(segments)),
        flops=decoder_bench.train_step_flops(dims, batch, length),
        params_expected=decoder_bench.expected_param_count(dims))
    loss_tokens = int(np.count_nonzero(np.asarray(device_batch["decoder_loss_weights"])))
    return result | dict(target_tokens_per_s=loss_tokens / result["step_s"],
                         segments=int(sum(len(np.unique(row[row > 0])) for row in segments)))


def measure_train_step(impl: str, step_fn, state, device_batch, settings: Settings, *,
                       positions: int, real_tokens: int, flops: dict, params_expected: int):
    """Times step_fn (time_train_step) and derives tokens/s, TFLOP/s and MFU from `flops`."""
    params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(state.params))
    compile_s, step_times, first_loss, last_loss = time_train_step(
        step_fn, state, device_batch, settings.train_steps, settings.train_repeats)
    step_s = statistics.median(step_times)
    kind = jax.devices()[0].device_kind
    peak = peak_flops(kind)
    peak_total = None if peak is None else peak * jax.device_count()
    return dict(
        attention_impl=impl, step_s=step_s, step_times_s=step_times,
        compile_and_first_step_s=compile_s,
        positions_per_s=positions / step_s, real_tokens_per_s=real_tokens / step_s,
        fill=real_tokens / positions, model_flops_per_step=flops,
        model_tflops_per_s=flops["total"] / step_s / 1e12,
        peak_flops=peak_total, peak_note="unknown peak" if peak is None else
        f"{peak / 1e12:.0f} TFLOP/s dense bf16 per device ({kind}) x {jax.device_count()}",
        mfu=None if peak_total is None else flops["total"] / step_s / peak_total,
        params=params, params_expected=params_expected,
        params_match=params == params_expected,
        loss_first=first_loss, loss_last=last_loss)


def time_impls(one, impls, estimate: float, deadline: float, log) -> tuple[list, str]:
    """one(impl) for each implementation that can still start before the deadline (a run needs
    `estimate` seconds, or what the slowest run so far took); (results, section status)."""
    results = []
    for impl in impls:
        left = deadline - time.perf_counter()
        if left < estimate:
            results.append(dict(attention_impl=impl, skipped=f"needs ~{estimate:.0f}s, "
                                                             f"{max(left, 0):.0f}s left"))
        else:
            start = time.perf_counter()
            try:
                results.append(one(impl))
            except Exception as e:  # an OOM or compile failure of one implementation
                results.append(dict(attention_impl=impl, error=_one_line(e),
                                    traceback=traceback.format_exc(limit=8)))
            estimate = max(estimate, time.perf_counter() - start)  # what it really took
        log(_train_line(results[-1]))
    errors = [r["attention_impl"] for r in results if "error" in r]
    skipped = [r["attention_impl"] for r in results if "skipped" in r]
    return results, "error" if errors else ("partial" if skipped else "ok")


def run_train(settings: Settings, deadline: float, log) -> dict:
    gin_used = gin_version()
    log(f"  gin: {gin_used}")
    dims = settings.model
    results, status = time_impls(functools.partial(train_one, settings), settings.train_impls,
                                 settings.train_impl_s, deadline, log)
    return dict(status=status, model=dataclasses.asdict(dims), batch=settings.train_batch,
                lengths=dict(inputs=settings.train_lengths[0],
                             targets=settings.train_lengths[1]),
                activations="bfloat16", params_dtype="float32", optimizer="adafactor",
                gin=gin_used, flop_formula=train_step_flops.__doc__.strip(), runs=results)


def run_decoder_train(settings: Settings, deadline: float, log) -> dict:
    """The decoder-only row: DecoderOnlyModel (prefix-LM, GQA) on packed prefix-LM rows."""
    gin_used = gin_version()
    dims = settings.decoder_model
    log(f"  {dims.name}: {decoder_bench.expected_param_count(dims):,} params, batch "
        f"{settings.decoder_batch} x {settings.decoder_length}, prefix-LM packed rows, AdamW")
    results, status = time_impls(functools.partial(decoder_train_one, settings),
                                 settings.decoder_impls, settings.decoder_impl_s, deadline, log)
    return dict(status=status, model=dataclasses.asdict(dims), batch=settings.decoder_batch,
                length=settings.decoder_length, mode="prefix_lm", activations="bfloat16",
                params_dtype="float32", optimizer="adamw", gin=gin_used,
                flop_formula=decoder_bench.train_step_flops.__doc__.strip(), runs=results)


def _train_line(r) -> str:
    if "step_s" not in r:
        return f"  {r['attention_impl']:<7} {r.get('skipped') or 'error: ' + r.get('error', '')}"
    mfu = "unknown peak" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
    return (f"  {r['attention_impl']:<7} step {1e3 * r['step_s']:9.2f} ms  "
            f"{r['positions_per_s']:>10,.0f} pos/s  {r['real_tokens_per_s']:>10,.0f} real tok/s  "
            f"{r['model_tflops_per_s']:7.2f} TFLOP/s  MFU {mfu}  "
            f"(compile+1st {r['compile_and_first_step_s']:.1f}s, loss {r['loss_first']:.2f}"
            f"->{r['loss_last']:.2f}, params {r['params']:,})"
            + ("" if r["params_match"] else
               f"  PARAMS != {r['params_expected']:,} EXPECTED: FLOPs are off"))


# ----------------------------------------------------------------------------- settings


def make_settings(args) -> Settings:
    decoder_scenarios = attention_bench.DECODER_SCENARIOS.values()
    # --small times the decoder on pallas only: on a CPU its rows only prove the plumbing, and
    # the XLA path's equal loss is tests/test_llama.py's (each CPU train-step compile is ~10 s).
    decoder_impls = args.decoder_impls or ("pallas" if args.small else "pallas,xla")
    impls = dict(train_impls=tuple(args.train_impls.split(",")),
                 decoder_impls=tuple(decoder_impls.split(",")))
    if args.small:
        scenarios = attention_bench.SCENARIOS.values()
        # 8 query heads on 2 kv heads: the decoder scenarios group 4 query heads per kv head.
        return Settings(
            check_cases=SMALL_CHECKS + SMALL_DECODER_CHECKS, check_blocks=SMALL_BLOCKS,
            attn_cases=tuple((sc, attention_bench.Shape(1, 64, 2, 32)) for sc in scenarios)
            + tuple((sc, attention_bench.Shape(1, 64, 8, 16)) for sc in decoder_scenarios),
            attn_iters=2, model=T5_TINY, train_batch=2, train_lengths=(64, 32),
            train_steps=2, train_repeats=2, decoder_model=decoder_bench.LLAMA_TINY,
            decoder_batch=2, decoder_length=64, attn_row_s=2.0, train_impl_s=10.0,
            decoder_impl_s=10.0, **impls)
    lengths = [int(x) for x in args.attn_lengths.split(",")]
    head_dims = [int(x) for x in args.attn_head_dims.split(",")]
    # Row order is priority order (rows past the attention deadline are skipped): the first
    # length's T5 rows, then the decoder rows, then the other lengths.
    cases = []
    for i, length in enumerate(lengths):
        cases += [(sc, attention_bench.timing_shape(length, d))
                  for d in head_dims for sc in attention_bench.SCENARIOS.values()]
        if i == 0 and args.attn_decoder_length:
            shape = attention_bench.timing_shape(args.attn_decoder_length,
                                                 args.attn_decoder_head_dim)
            cases += [(sc, shape) for sc in decoder_scenarios]
    enc, dec = (int(x) for x in args.train_lengths.split(","))
    # The per-implementation costs are guesses (compile + 17 steps; no GPU has run this yet):
    # the T5 row's was 90 s, cut to 60 s so that the decoder row's reserve leaves the attention
    # table time. A run that takes longer raises the estimate for the next implementation.
    return Settings(
        check_cases=GPU_CHECKS + GPU_DECODER_CHECKS, check_blocks=None, attn_cases=tuple(cases),
        attn_iters=10, model=T5_BASE, train_batch=args.train_batch, train_lengths=(enc, dec),
        train_steps=5, train_repeats=3, decoder_model=decoder_bench.LLAMA_1B,
        decoder_batch=args.decoder_batch, decoder_length=args.decoder_length,
        attn_row_s=8.0, train_impl_s=60.0, decoder_impl_s=75.0, **impls)


# ----------------------------------------------------------------------------- plumbing


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def device_slug(kind: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", kind.lower()).strip("_") or "device"


def output_path(args, kind: str) -> str:
    name = f"gpu_suite_{device_slug(kind)}.json"
    if args.out:
        return args.out
    if os.environ.get("OUT"):
        return os.path.join(os.environ["OUT"], name)
    return os.path.join(REPO, "benchmarks", "results", name)


class ResultFile:
    """Writes the results JSON atomically; called after every section."""

    def __init__(self, path: str, results: dict):
        self.path, self.results = path, results
        self.lock = threading.Lock()

    def write(self):
        with self.lock:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.results, f, indent=2, default=str)
            os.replace(tmp, self.path)


def start_watchdog(hard_limit_s: float, result_file: ResultFile, log):
    """Ends the process at the hard limit (one compile can overrun any estimate), leaving the
    JSON with what finished and an 'aborted' note."""
    def fire():
        log(f"\nHARD TIME LIMIT: {hard_limit_s:.0f}s since start; stopping (exit 3).")
        try:
            result_file.results["aborted"] = f"hard time limit {hard_limit_s:.0f}s reached"
            result_file.write()
        except Exception:  # the main thread may be mid-update: the last full write stays
            pass
        sys.stdout.flush()
        os._exit(3)
    timer = threading.Timer(max(hard_limit_s - (time.perf_counter() - _PROCESS_START), 0), fire)
    timer.daemon = True
    timer.start()
    return timer


def run_section(name: str, fn, *, deadline: float, min_s: float, results: dict,
                result_file: ResultFile, log):
    """Runs fn(deadline, log) unless fewer than min_s seconds are left; records status (fn may
    set its own, e.g. "partial"), time, and the exception if it raised."""
    left = deadline - time.perf_counter()
    log(f"\n== {name} ({left:.0f}s left for it) ==")
    entry = results["sections"][name] = {}
    if left < min_s:
        entry.update(status="skipped", reason=f"needs at least {min_s:.0f}s, {left:.0f}s left")
        log(f"  skipped: {entry['reason']}")
    else:
        start = time.perf_counter()
        try:
            entry.update(fn(deadline, log))
            entry.setdefault("status", "ok")
        except Exception as e:
            entry.update(status="error", error=_one_line(e),
                         traceback=traceback.format_exc(limit=12))
            log(f"  ERROR: {entry['error']}")
        entry["seconds"] = round(time.perf_counter() - start, 1)
    result_file.write()
    return entry


def print_summary(results: dict, settings: Settings, log):
    sections = results["sections"]
    log("\n" + "=" * 100)
    env = results["environment"]
    log(f"{env['device']['kind']} x{env['device']['count']} ({env['device']['platform']}), "
        f"jax {env['versions']['jax']}, {env['date']}, {results['elapsed_s']:.0f}s of "
        f"{results['budget_s']:.0f}s budget")
    if not results["timings_meaningful"]:
        log("CPU run: the Pallas kernel ran in the interpreter. TIMINGS, TOKENS/S AND MFU BELOW "
            "ARE NOT MEANINGFUL; only the correctness results are.")
    corr = sections.get("correctness", {})
    if corr.get("rows"):
        log("\nKernel vs reference (" + CHECK_LEGEND + ")")
        log(CHECK_HEADER)
        for row in corr["rows"]:
            log(_check_line(row))
    attn = sections.get("attention", {})
    if attn.get("rows"):
        log("\nAttention (bf16; FLOPs: " + attention_bench.FLOP_CONVENTION + ")")
        attention_bench.print_table(attn["rows"])
        for line in attn.get("targets", []):
            log("  " + line)
    train = sections.get("train_step", {})
    if train.get("runs"):
        lengths = train["lengths"]
        log(f"\nTrain step: {train['model']['name']}, batch {train['batch']}, lengths "
            f"{lengths['inputs']}/{lengths['targets']}, bf16 activations, Adafactor")
        for r in train["runs"]:
            log(_train_line(r))
    dec = sections.get("decoder_train_step", {})
    if dec.get("runs"):
        log(f"\nDecoder train step: {dec['model']['name']} ({dec['model']['heads']} heads on "
            f"{dec['model']['kv_heads']} kv heads), batch {dec['batch']} x {dec['length']}, packed "
            f"prefix-LM rows, bf16 activations, AdamW; FLOPs 6 * matmul params * positions + "
            f"dense attention")
        for r in dec["runs"]:
            log(_train_line(r))
    log("")
    for name, entry in sections.items():
        note = entry.get("reason") or entry.get("error") or ""
        log(f"  {name:<18} {entry.get('status', '?'):<8} {entry.get('seconds', 0):6.1f}s  {note}")
    log(f"\ncorrectness: {results['verdict']}")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true",
                        help="tiny shapes and a tiny T5 (CPU interpret mode, or a smoke test)")
    parser.add_argument("--budget_s", type=float, default=510.0,
                        help="total seconds; sections that cannot fit are skipped")
    parser.add_argument("--grace_s", type=float, default=45.0,
                        help="the process is stopped at budget_s + grace_s, whatever it is doing")
    parser.add_argument("--out", help="results JSON (default: $OUT/gpu_suite_<device>.json if "
                                      "OUT is set, else benchmarks/results/)")
    parser.add_argument("--attn_lengths", default="2048,512",
                        help="first is most important: rows past the budget are skipped")
    parser.add_argument("--attn_head_dims", default="64")
    parser.add_argument("--attn_decoder_length", type=int, default=2048,
                        help="length of the decoder rows (gqa_causal, prefix_lm); 0: none")
    parser.add_argument("--attn_decoder_head_dim", type=int, default=128)
    parser.add_argument("--train_batch", type=int, default=16)
    parser.add_argument("--train_lengths", default="512,128", help="inputs,targets")
    parser.add_argument("--train_impls", default="pallas,xla",
                        help="attention implementations to time, in order of importance")
    # 2 rows: the xla row keeps [B, H, L, L] f32 attention buffers per layer. XLA's (CPU) compile
    # of the 1B step at L=2048 needs ~33 GiB of temporaries per row (B=1: 36, 2: 70, 4: 135 GiB)
    # besides 14 GiB of state, and JAX takes 75% of the H200's memory: B=4 would not fit.
    parser.add_argument("--decoder_batch", type=int, default=2)
    parser.add_argument("--decoder_length", type=int, default=2048)
    parser.add_argument("--decoder_impls", default=None,
                        help="attention implementations of the decoder row, in order of "
                             "importance (cudnn cannot run its packed prefix-LM rows); default "
                             "pallas,xla, with --small pallas")
    parser.add_argument("--sections",
                        default="correctness,attention,train_step,decoder_train_step")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    log = lambda msg="": print(msg, flush=True)
    settings = make_settings(args)
    env = attention_bench.environment()
    dev = jax.devices()[0]
    env["device"]["compute_capability"] = getattr(dev, "compute_capability", None)
    env["argv"] = [sys.executable, *sys.argv]
    env["xla_flags"] = os.environ.get("XLA_FLAGS")
    extra = attention_bench.package_versions(
        ("jax-cuda13-plugin", "jax-cuda12-plugin", "gin-config", "triton"))
    env["versions"].update((k, v) for k, v in extra.items() if k != "python")
    backend = jax.default_backend()
    results = dict(environment=env, mode="small" if args.small else "full",
                   backend=backend, timings_meaningful=backend != "cpu",
                   budget_s=args.budget_s, sections={})
    result_file = ResultFile(output_path(args, dev.device_kind), results)
    start_watchdog(args.budget_s + args.grace_s, result_file, log)
    end = _PROCESS_START + args.budget_s

    log(f"gpu_suite: {dev.device_kind} x{jax.device_count()} ({backend}), jax "
        f"{env['versions']['jax']}, {results['mode']} mode, budget {args.budget_s:.0f}s, "
        f"results -> {result_file.path}")
    if backend == "cpu":
        log("CPU: the Pallas kernel runs in interpret mode. Timings, tokens/s and MFU from this "
            "run are NOT meaningful; only the correctness checks are.")

    wanted = args.sections.split(",")
    # Time held back for the train steps (every implementation asked for): the attention table
    # cannot eat either, and the T5 row cannot eat the decoder row's. The correctness section
    # comes first and is never cut short.
    train_reserve = settings.train_impl_s * len(settings.train_impls) \
        if "train_step" in wanted else 0.0
    decoder_reserve = settings.decoder_impl_s * len(settings.decoder_impls) \
        if "decoder_train_step" in wanted else 0.0
    sections = [
        ("correctness", run_correctness, end, 5.0),
        ("attention", run_attention, end - train_reserve - decoder_reserve,
         2 * settings.attn_row_s),
        ("train_step", run_train, end - decoder_reserve, settings.train_impl_s),
        ("decoder_train_step", run_decoder_train, end, settings.decoder_impl_s),
    ]
    for name, fn, deadline, min_s in sections:
        if name in wanted:
            run_section(name, functools.partial(fn, settings), deadline=deadline, min_s=min_s,
                        results=results, result_file=result_file, log=log)

    corr = results["sections"].get("correctness", {})
    passed = corr.get("status") == "ok" and corr.get("all_passed")
    if "correctness" not in wanted:
        passed, results["verdict"] = True, "not checked (--sections left it out)"
    else:
        results["verdict"] = ("PASS: every check ran and passed" if passed else
                              f"FAIL ({corr.get('status', 'not run')}; failed or not run: "
                              f"{corr.get('failed', 'all')})")
    results["elapsed_s"] = round(time.perf_counter() - _PROCESS_START, 1)
    result_file.write()
    print_summary(results, settings, log)
    log(f"wrote {result_file.path}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
