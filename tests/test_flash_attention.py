"""Tests of the Pallas flash-attention kernel, run in CPU interpret mode.

The ground truth is flan_mix.kernels.reference (plain XLA, float32 softmax), plus JAX's own TPU
flash-attention kernel under TPU interpret mode on one shared case. Shapes are small and blocks
tiny (16-32) so that every case spans several tiles, and the T5 bias configs are chosen so that
tiles fall in all three bias regimes (far past, band around the diagonal, far future).

Compile time of the interpreted kernels dominates the run time, so each case compiles the
forward and the backward together once.
"""
from __future__ import annotations

import dataclasses
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flan_mix.kernels import flash_attention as fa
from flan_mix.kernels import reference
from flan_mix.kernels.flash_attention import BlockSizes, flash_attention
from flan_mix.kernels.reference import reference_attention

# Tolerances, on the normalised max error max|got - want| / max|want|:
# * float32: kernel and reference both compute in f32 and differ only in summation order
#   (tiled online softmax with rescaling vs one softmax; blocked vs full matmuls). Measured
#   errors over the grid are <= 2e-6; 1e-4 leaves 50x headroom, while a wrong mask, bucket or
#   block range moves whole probabilities and gives errors of order 1e-1.
# * bfloat16: inputs are bf16 for both; the kernel (like every flash kernel) rounds p and dS to
#   bf16 before its matmuls and writes bf16 outputs and gradients, while the truth is the f32
#   reference on the same bf16 values. bf16 has 8 mantissa bits (eps = 2^-8 = 3.9e-3); measured
#   errors are <= 7.1e-3 (about 2 eps), and 2e-2 (5 eps) bounds a few roundings per element.
F32_TOL = 1e-4
BF16_TOL = 2e-2
TOL = {jnp.float32: F32_TOL, jnp.bfloat16: BF16_TOL}

SMALL = BlockSizes(block_q=16, block_k=16, block_q_dkv=16, block_k_dkv=16, block_q_dq=16,
                   block_k_dq=16)
# Different tiles per kernel: the padding must be a common multiple, and the dq/dkv range
# arithmetic must not assume the forward's tiles.
MIXED = BlockSizes(block_q=32, block_k=16, block_q_dkv=16, block_k_dkv=32, block_q_dq=32,
                   block_k_dq=16)


def _norm_err(got, want):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def _segments(rng, batch, length, lengths_per_row):
    """Packed rows: consecutive segments 1, 2, ... of the given lengths, then 0-padding."""
    ids = np.zeros((batch, length), np.int32)
    for b, lens in enumerate(lengths_per_row):
        pos = 0
        for seg, n in enumerate(lens, start=1):
            ids[b, pos:pos + n] = seg
            pos += n
        assert pos <= length
    return jnp.asarray(ids)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    dtype: type
    causal: bool
    q_len: int
    kv_len: int
    segments: tuple | None = None  # (q segment lengths per row, kv segment lengths per row)
    bias: str | None = None        # None, "bidirectional" (encoder) or "unidirectional" (decoder)
    num_buckets: int = 8
    max_distance: int = 16
    blocks: BlockSizes = SMALL
    heads: int = 2
    head_dim: int = 16
    sm_scale: float = 1.0


SELF_SEGS = (((20, 25, 11), (40, 20)), ((20, 25, 11), (40, 20)))  # 64 long: some padding
RAGGED_SEGS = (((30, 30), (50, 15)), ((30, 30), (50, 15)))          # 70 long: padding
CROSS_SEGS = (((12, 20), (25, 4, 3)),   # q: 40 long
              ((30, 30, 9), (50, 6)))   # kv: 72 long; kv segment 3 has no queries and
#                                         q segment 3 of row 1 has no keys (fully masked rows)

CASES = [
    Case("plain", jnp.float32, False, 64, 64, sm_scale=0.25),
    Case("causal_ragged", jnp.float32, True, 50, 50),
    Case("encoder_packed_bias", jnp.float32, False, 64, 64, SELF_SEGS, "bidirectional"),
    Case("decoder_packed_bias_ragged", jnp.float32, True, 70, 70, RAGGED_SEGS,
         "unidirectional", blocks=MIXED),
    Case("cross_packed", jnp.float32, False, 40, 72, CROSS_SEGS, blocks=MIXED),
    Case("cross_bias_q_longer", jnp.float32, False, 72, 40, None, "bidirectional"),
    Case("causal_cross_decoder_bias", jnp.float32, True, 40, 72, None, "unidirectional"),
    Case("causal_cross_q_longer_packed", jnp.float32, True, 72, 40,
         (CROSS_SEGS[1], CROSS_SEGS[0]), "bidirectional"),
    # T5's own bucket count; max_distance 32 so that 96 positions still reach saturation.
    Case("t5_buckets", jnp.float32, False, 96, 96, None, "bidirectional", num_buckets=32,
         max_distance=32, blocks=MIXED),
    Case("bf16_encoder_packed_bias", jnp.bfloat16, False, 70, 70, RAGGED_SEGS, "bidirectional"),
    Case("bf16_decoder_packed_bias", jnp.bfloat16, True, 64, 64, SELF_SEGS, "unidirectional",
         head_dim=32),
    Case("bf16_cross", jnp.bfloat16, False, 40, 72, None, None, sm_scale=0.25),
]


def _inputs(case: Case, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 6)
    b, h, d = 2, case.heads, case.head_dim
    q = jax.random.normal(keys[0], (b, case.q_len, h, d), jnp.float32).astype(case.dtype)
    k = jax.random.normal(keys[1], (b, case.kv_len, h, d), jnp.float32).astype(case.dtype)
    v = jax.random.normal(keys[2], (b, case.kv_len, h, d), jnp.float32).astype(case.dtype)
    table = jax.random.normal(keys[3], (h, case.num_buckets), jnp.float32)
    cotangent = jax.random.normal(keys[4], (b, case.q_len, h, d), jnp.float32)
    segs = None
    if case.segments is not None:
        rng = np.random.default_rng(seed)
        segs = (_segments(rng, b, case.q_len, case.segments[0]),
                _segments(rng, b, case.kv_len, case.segments[1]))
    return q, k, v, table, cotangent, segs


def _attention_kwargs(case: Case, segs):
    kwargs = dict(causal=case.causal, sm_scale=case.sm_scale,
                  bidirectional=case.bias == "bidirectional", max_distance=case.max_distance)
    if segs is not None:
        kwargs.update(q_segment_ids=segs[0], kv_segment_ids=segs[1])
    return kwargs


def _value_and_grads(attn, q, k, v, table, cotangent, use_bias, **kwargs):
    """Output and d(sum(out * cotangent)) w.r.t. q, k, v and the table, in one jit."""
    def f(q, k, v, table):
        return attn(q, k, v, bias_table=table if use_bias else None, **kwargs)

    @jax.jit
    def run(q, k, v, table):
        out, vjp = jax.vjp(f, q, k, v, table)
        return out, vjp(cotangent.astype(out.dtype))

    return run(q, k, v, table)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_matches_reference(case: Case):
    q, k, v, table, cotangent, segs = _inputs(case)
    kwargs = _attention_kwargs(case, segs)
    use_bias = case.bias is not None
    out, grads = _value_and_grads(
        lambda *a, **kw: flash_attention(*a, block_sizes=case.blocks, **kw),
        q, k, v, table, cotangent, use_bias, **kwargs)
    # The truth is computed in f32 from the same (possibly bf16-rounded) inputs.
    f32 = lambda x: x.astype(jnp.float32)
    want_out, want_grads = _value_and_grads(reference_attention, f32(q), f32(k), f32(v), table,
                                            cotangent, use_bias, **kwargs)
    assert out.dtype == q.dtype and out.shape == q.shape
    tol = TOL[case.dtype]
    assert _norm_err(out, want_out) < tol, "forward"
    names = ["dq", "dk", "dv", "d_table"]
    for name, got, want, x in zip(names, grads, want_grads, (q, k, v, table)):
        assert got.dtype == x.dtype and got.shape == x.shape, name
        assert np.all(np.isfinite(np.asarray(got, np.float32))), name
        if name == "d_table" and not use_bias:
            continue
        assert _norm_err(got, want) < tol, name


def test_fully_masked_rows_are_zero_with_zero_gradients():
    """Padding queries, queries whose segment has no keys, and a row whose keys are all padding."""
    b, lq, lk, h, d = 2, 40, 48, 2, 16
    q_seg = np.zeros((b, lq), np.int32)
    kv_seg = np.zeros((b, lk), np.int32)
    q_seg[0, :20], q_seg[0, 20:30] = 1, 2      # row 0: 30..39 are padding; segment 2 has no keys
    kv_seg[0, :35] = 1
    q_seg[1, :25] = 1                          # row 1: every key is padding
    keys = jax.random.split(jax.random.PRNGKey(3), 5)
    q = jax.random.normal(keys[0], (b, lq, h, d))
    k = jax.random.normal(keys[1], (b, lk, h, d))
    v = jax.random.normal(keys[2], (b, lk, h, d))
    table = jax.random.normal(keys[3], (h, 8))
    cotangent = jax.random.normal(keys[4], (b, lq, h, d))
    kwargs = dict(q_segment_ids=jnp.asarray(q_seg), kv_segment_ids=jnp.asarray(kv_seg),
                  causal=True, bidirectional=False, max_distance=16)
    out, (dq, dk, dv, dtable) = _value_and_grads(
        lambda *a, **kw: flash_attention(*a, block_sizes=SMALL, **kw),
        q, k, v, table, cotangent, True, **kwargs)
    for x in (out, dq, dk, dv, dtable):
        assert np.all(np.isfinite(np.asarray(x)))
    masked_q = np.array([[i >= 20 for i in range(lq)], [True] * lq])
    masked_k = np.array([[j >= 35 for j in range(lk)], [True] * lk])
    np.testing.assert_array_equal(np.asarray(out)[masked_q], 0.0)
    np.testing.assert_array_equal(np.asarray(dq)[masked_q], 0.0)
    np.testing.assert_array_equal(np.asarray(dk)[masked_k], 0.0)
    np.testing.assert_array_equal(np.asarray(dv)[masked_k], 0.0)
    # The table gradient must also ignore every masked pair.
    want_out, want_grads = _value_and_grads(reference_attention, q, k, v, table, cotangent, True,
                                            **kwargs)
    assert _norm_err(out, want_out) < F32_TOL
    assert _norm_err(dtable, want_grads[3]) < F32_TOL
    assert np.abs(np.asarray(out)[~masked_q]).max() > 0.1  # the visible rows are not zeroed


@pytest.mark.parametrize("num_buckets,bidirectional,max_distance",
                         [(32, True, 128), (32, False, 128), (8, True, 16), (16, False, 20),
                          (64, True, 1000)])
def test_in_kernel_buckets_match_reference(num_buckets, bidirectional, max_distance):
    buckets = fa._bucket_intervals(num_buckets, bidirectional, max_distance)
    rel = jnp.arange(-5 * max_distance, 5 * max_distance + 1, dtype=jnp.int32)
    want = reference.relative_position_bucket(rel, bidirectional=bidirectional,
                                              num_buckets=num_buckets, max_distance=max_distance)
    np.testing.assert_array_equal(fa.bucket_ids_from_intervals(rel, buckets), want)


def test_t5_buckets_hand_computed():
    """Independent values of T5's bucket formula (rel = k_pos - q_pos).

    Bidirectional, 32 buckets, max_distance 128: 16 per direction, 8 exact; a key x >= 8 steps
    in the past gets 8 + floor(log(x / 8) / log(16) * 8), e.g. x = 12 -> 8 + floor(1.17) = 9;
    future keys add 16. Unidirectional: 16 exact, x = 20 -> 16 + floor(log(1.25) / log(8) * 16)
    = 16 + floor(1.72) = 17, and every future key is bucket 0.
    """
    cases = {True: {0: 0, -1: 1, -7: 7, -8: 8, -12: 9, -1000: 15, 1: 17, 12: 25, 1000: 31},
             False: {0: 0, -1: 1, -15: 15, -20: 17, -1000: 31, 5: 0, 1000: 0}}
    for bidirectional, expected in cases.items():
        buckets = fa._bucket_intervals(32, bidirectional, 128)
        rel = jnp.asarray(list(expected), jnp.int32)
        got = fa.bucket_ids_from_intervals(rel, buckets)
        np.testing.assert_array_equal(got, list(expected.values()))


def _tile_d_range(i, j, bq, bk):
    """(min, max) of k_pos - q_pos over tile (q block i, kv block j)."""
    return j * bk - (i * bq + bq - 1), j * bk + bk - 1 - i * bq


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bias", [None, (8, True, 16), (8, False, 16), (32, True, 32)])
def test_block_ranges_cover_exactly_the_needed_tiles(causal, bias):
    """Brute force over tiles: each needed tile is visited once, with a bias form and causal
    masking that are valid for every element of the tile; only fully masked tiles are skipped."""
    buckets = None if bias is None else fa._bucket_intervals(*bias)
    st = fa._Static(backend="cpu", interpret=True, layout="blhd", causal=causal, sm_scale=1.0,
                    kv_len=0, mask_kv_tail=False, has_segments=False, buckets=buckets,
                    blocks=SMALL)

    def check(kind, dmin, dmax):
        if kind.bias == "first":
            assert dmax < buckets.first_end
        if kind.bias == "last":
            assert dmin >= buckets.last_start
        if causal and not kind.causal:
            assert dmax <= 0

    for bq, bk, nq, nk in [(16, 16, 7, 7), (32, 16, 3, 8), (16, 64, 9, 2), (128, 32, 2, 6)]:
        for i in range(nq):
            ranges = fa._kv_ranges(jnp.int32(i), st=st, bq=bq, bk=bk, nk=nk)
            visited = []
            for lo, hi, kind in ranges:
                for j in range(int(lo), int(hi)):
                    visited.append(j)
                    check(kind, *_tile_d_range(i, j, bq, bk))
            needed = [j for j in range(nk) if not causal or _tile_d_range(i, j, bq, bk)[0] <= 0]
            assert visited == needed, (i, ranges)
        for j in range(nk):
            ranges = fa._q_ranges(jnp.int32(j), st=st, bq=bq, bk=bk, nq=nq)
            visited = []
            for lo, hi, kind in ranges:
                for i in range(int(lo), int(hi)):
                    visited.append(i)
                    check(kind, *_tile_d_range(i, j, bq, bk))
            needed = [i for i in range(nq) if not causal or _tile_d_range(i, j, bq, bk)[0] <= 0]
            assert visited == needed, (j, ranges)


@pytest.mark.parametrize("backend,q_len,kv_len,head_dim,blocks", [
    # GPU configuration: head dim 40 padded to 64, power-of-two tiles, ragged lengths.
    ("gpu", 50, 70, 40, BlockSizes(32, 16, 16, 32, 32, 16)),
    # TPU configuration: [B, H, L, D] layout, 128-multiple tiles, SMEM table, head dim 64 -> 128.
    ("tpu", 200, 130, 64, None),
])
def test_backend_configurations_under_interpreter(backend, q_len, kv_len, head_dim, blocks):
    """Each backend's own layout, padding and tiling, executed by the interpreter."""
    case = Case(f"{backend}_config", jnp.float32, True, q_len, kv_len, None, "bidirectional",
                head_dim=head_dim)
    q, k, v, table, cotangent, _ = _inputs(case, seed=1)
    segs = (jnp.asarray(np.repeat([[1, 2, 0]], [q_len // 2, q_len - q_len // 2 - 3, 3], 1)
                        .repeat(2, 0).astype(np.int32)),
            jnp.asarray(np.repeat([[1, 2, 0]], [kv_len // 3, kv_len - kv_len // 3 - 5, 5], 1)
                        .repeat(2, 0).astype(np.int32)))
    kwargs = _attention_kwargs(case, segs)
    out, grads = _value_and_grads(
        lambda *a, **kw: flash_attention(*a, block_sizes=blocks, backend=backend,
                                         interpret=True, **kw),
        q, k, v, table, cotangent, True, **kwargs)
    want_out, want_grads = _value_and_grads(reference_attention, q, k, v, table, cotangent, True,
                                            **kwargs)
    assert _norm_err(out, want_out) < F32_TOL
    for name, got, want in zip(["dq", "dk", "dv", "d_table"], grads, want_grads):
        assert _norm_err(got, want) < F32_TOL, name


def test_agrees_with_jax_tpu_flash_attention():
    """JAX's TPU kernel in TPU interpret mode, fed the materialised bias and the segment ids.

    That kernel has no padding semantics (segment 0 is an ordinary id), so the shared case uses
    ids >= 1. Its bias gradient is the full [B, H, Lq, Lk] array; summed per bucket it must
    equal our table gradient.
    """
    from jax.experimental.pallas import tpu as pltpu
    from jax.experimental.pallas.ops.tpu import flash_attention as jax_tpu

    b, length, h, d, nb = 1, 256, 2, 64, 32
    keys = jax.random.split(jax.random.PRNGKey(7), 5)
    q, k, v = (jax.random.normal(keys[i], (b, length, h, d)) for i in range(3))
    table = jax.random.normal(keys[3], (h, nb))
    cotangent = jax.random.normal(keys[4], (b, length, h, d))
    seg = jnp.asarray([[1] * 100 + [2] * 90 + [3] * 66], jnp.int32)
    bias = reference.relative_position_bias(table, length, length, bidirectional=False,
                                            max_distance=128)
    bias = jnp.broadcast_to(bias[None], (b, h, length, length))
    to_bhld = lambda x: jnp.swapaxes(x, 1, 2)

    def theirs(q, k, v, bias):
        out = jax_tpu.flash_attention(to_bhld(q), to_bhld(k), to_bhld(v), bias,
                                      jax_tpu.SegmentIds(seg, seg), causal=True, sm_scale=1.0)
        return to_bhld(out)

    with pltpu.force_tpu_interpret_mode():
        their_out, vjp = jax.vjp(theirs, q, k, v, bias)
        their_grads = vjp(cotangent)
        jax.block_until_ready(their_grads)
    out, grads = _value_and_grads(
        lambda *a, **kw: flash_attention(*a, **kw), q, k, v, table, cotangent, True,
        q_segment_ids=seg, kv_segment_ids=seg, causal=True, bidirectional=False,
        max_distance=128)
    assert _norm_err(out, their_out) < F32_TOL
    for name, got, want in zip(["dq", "dk", "dv"], grads[:3], their_grads[:3]):
        assert _norm_err(got, want) < F32_TOL, name
    rel = jnp.arange(length)[None, :] - jnp.arange(length)[:, None]
    bucket = reference.relative_position_bucket(rel, bidirectional=False, num_buckets=nb,
                                                max_distance=128).reshape(-1)
    their_dtable = jax.vmap(lambda g: jax.ops.segment_sum(g.reshape(-1), bucket, nb))(
        their_grads[3].sum(0))
    assert _norm_err(grads[3], their_dtable) < F32_TOL


# ----------------------------------------------------------------------------- memory


def _largest_buffer(hlo_text: str) -> int:
    """Element count of the largest array type in an HLO / StableHLO text dump."""
    shapes = re.findall(r"\b(?:f32|bf16|f16|s32|pred)\[([0-9,]+)\]", hlo_text)
    shapes += [s.replace("x", ",") for s in
               re.findall(r"tensor<([0-9x]+)x(?:f32|bf16|f16|i32|i1)>", hlo_text)]
    return max(math.prod(int(n) for n in s.split(",")) for s in shapes if s)


def _attention_fns(attn, **extra):
    def fwd(q, k, v, seg, table):
        return attn(q, k, v, q_segment_ids=seg, kv_segment_ids=seg, causal=True,
                    bias_table=table, bidirectional=False, **extra)

    def fwd_bwd(q, k, v, seg, table):
        return jax.grad(lambda *a: jnp.sum(fwd(*a)), argnums=(0, 1, 2, 4))(q, k, v, seg, table)

    return {"fwd": fwd, "fwd+bwd": fwd_bwd}


def _abstract_inputs(length, batch=1, heads=2, head_dim=32):
    x = jax.ShapeDtypeStruct((batch, length, heads, head_dim), jnp.float32)
    return (x, x, x, jax.ShapeDtypeStruct((batch, length), jnp.int32),
            jax.ShapeDtypeStruct((heads, 32), jnp.float32))


def test_no_quadratic_buffer_at_2k():
    """Compiled memory at L=2048 (B=1, H=2, D=32, f32; causal, segments, bias).

    On CPU the kernel runs through the Pallas interpreter, whose compiled HLO is the kernel's
    own dataflow: whole-array operands plus one block per step, so it holds an [L, L] array
    exactly when the kernel would. We check (1) XLA's memory_analysis temp bytes: the
    reference's grow 4x from L=1024 to 2048 and exceed one [B, H, L, L] f32 array, the
    kernel's grow ~2x and stay far below it; (2) the largest array in the compiled HLO.
    """
    b, h, length = 1, 2, 2048
    quadratic_bytes = b * h * length * length * 4
    temp = {}
    for name, attn in [("reference", reference_attention), ("kernel", flash_attention)]:
        for part, fn in _attention_fns(attn).items():
            for n in ((1024, 2048) if part == "fwd+bwd" else (2048,)):
                compiled = jax.jit(fn).lower(*_abstract_inputs(n)).compile()
                temp[name, part, n] = compiled.memory_analysis().temp_size_in_bytes
                if n == length:
                    largest = _largest_buffer(compiled.as_text())
                    if name == "reference":
                        assert largest >= b * h * length * length, (part, largest)
                    else:
                        assert largest < length * length, (part, largest)
    for part in ("fwd", "fwd+bwd"):
        assert temp["reference", part, length] >= quadratic_bytes
        assert temp["kernel", part, length] < quadratic_bytes / 4, temp
    ref_growth = temp["reference", "fwd+bwd", 2048] / temp["reference", "fwd+bwd", 1024]
    kernel_growth = temp["kernel", "fwd+bwd", 2048] / temp["kernel", "fwd+bwd", 1024]
    assert ref_growth > 2.5 and kernel_growth < 2.5, (ref_growth, kernel_growth)


@pytest.mark.parametrize("platform,backend", [("cuda", "gpu"), ("tpu", "tpu")])
def test_lowers_for_accelerators_without_quadratic_arrays(platform, backend):
    """Cross-lowers the compiled (not interpreted) kernels: Pallas -> Triton IR for CUDA and
    -> Mosaic for TPU. This catches ops a backend cannot lower without the hardware, and shows
    the XLA program around the kernels has no [L, L] array at L=2048. (The kernels' own tiles
    live inside the serialized custom calls and are [block, block].)"""
    length = 2048
    for part, fn in _attention_fns(flash_attention, backend=backend, interpret=False).items():
        lowered = jax.jit(fn).trace(*_abstract_inputs(length)).lower(
            lowering_platforms=(platform,))
        text = lowered.as_text()
        target = "__gpu$xla.gpu.triton" if backend == "gpu" else "tpu_custom_call"
        assert target in text, part
        assert _largest_buffer(text) < length * length, part


# ----------------------------------------------------------------------------- errors


def _arrays(b=1, lq=32, lk=32, h=2, d=16):
    return (jnp.zeros((b, lq, h, d)), jnp.zeros((b, lk, h, d)), jnp.zeros((b, lk, h, d)))


@pytest.mark.parametrize("call,message", [
    (lambda q, k, v: flash_attention(q, k, v[:, :, :1]), "same shape"),
    (lambda q, k, v: flash_attention(q[:, :, :1], k, v), "agree on batch, heads"),
    (lambda q, k, v: flash_attention(q, k, v, q_segment_ids=jnp.ones((1, 32), jnp.int32)),
     "both"),
    (lambda q, k, v: flash_attention(q, k, v, q_segment_ids=jnp.ones((1, 31), jnp.int32),
                                     kv_segment_ids=jnp.ones((1, 32), jnp.int32)),
     "segment ids must be"),
    (lambda q, k, v: flash_attention(q, k, v, bias_table=jnp.zeros((3, 32))), "bias_table"),
    (lambda q, k, v: flash_attention(q, k, v, bias_table=jnp.zeros((2, 2))), "num_buckets"),
    (lambda q, k, v: flash_attention(q, k, v, backend="gpu", interpret=True,
                                     block_sizes=BlockSizes(block_q=48)), "powers of two"),
    (lambda q, k, v: flash_attention(q, k, v, backend="tpu", interpret=True,
                                     block_sizes=BlockSizes(block_k=64)), "multiples of 128"),
    (lambda q, k, v: flash_attention(q, k, v, backend="cpu", interpret=False), "interpret=True"),
    (lambda q, k, v: flash_attention(q, k, v.astype(jnp.bfloat16)), "dtype"),
    (lambda q, k, v: jax.jit(lambda s: flash_attention(q, k, v, sm_scale=s))(1.0),
     "Python number"),
])
def test_refuses_unsupported_inputs_clearly(call, message):
    with pytest.raises(ValueError, match=message):
        call(*_arrays())


def test_refuses_tpu_sequences_that_overflow_vmem():
    """The TPU kernel keeps a (batch, head)'s whole K/V in VMEM; too long a sequence must be
    refused at trace time rather than fail (or spill) inside Mosaic."""
    x = jax.ShapeDtypeStruct((1, 1 << 18, 1, 128), jnp.bfloat16)
    with pytest.raises(ValueError, match="VMEM"):
        jax.eval_shape(lambda q, k, v: flash_attention(q, k, v, backend="tpu", interpret=False),
                       x, x, x)
    small = jax.ShapeDtypeStruct((1, 4096, 1, 128), jnp.bfloat16)
    jax.eval_shape(lambda q, k, v: flash_attention(q, k, v, backend="tpu", interpret=False),
                   small, small, small)
