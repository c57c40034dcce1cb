"""Decoder-only attention features: grouped-query attention (k/v with fewer heads than q) and the
prefix-LM mask (t5x/seqio decoder_causal_attention), in the XLA reference and attention().

The reference itself is checked independently: a mask written out by hand, GQA against plain
multi-head attention on explicitly repeated k/v heads, and a decoding chunk against the rows of
the full computation.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flan_mix.kernels import reference
from flan_mix.kernels.reference import reference_attention
from flan_mix.models.attention import attention

F32_TOL = 1e-4  # see tests/test_flash_attention.py for how the tolerances were set


def _norm_err(got, want):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def _packed(rows):
    """Segment ids and prefix flags from per-row lists of (segment length, prefix length), then
    padding to `length` (the first entry of each row)."""
    length = rows[0][0]
    seg = np.zeros((len(rows), length), np.int32)
    pre = np.zeros((len(rows), length), np.int32)
    for b, (_, segments) in enumerate(rows):
        pos = 0
        for sid, (n, p) in enumerate(segments, start=1):
            assert p <= n
            seg[b, pos:pos + n] = sid
            pre[b, pos:pos + p] = 1
            pos += n
        assert pos <= length
    return jnp.asarray(seg), jnp.asarray(pre)


def _qkv(key, batch, q_len, kv_len, heads, kv_heads, head_dim, dtype=jnp.float32):
    kq, kk, kv, kt, kc = jax.random.split(key, 5)
    q = jax.random.normal(kq, (batch, q_len, heads, head_dim), jnp.float32).astype(dtype)
    k = jax.random.normal(kk, (batch, kv_len, kv_heads, head_dim), jnp.float32).astype(dtype)
    v = jax.random.normal(kv, (batch, kv_len, kv_heads, head_dim), jnp.float32).astype(dtype)
    table = jax.random.normal(kt, (heads, 8), jnp.float32)
    cotangent = jax.random.normal(kc, (batch, q_len, heads, head_dim), jnp.float32)
    return q, k, v, table, cotangent


def _vjp(attn, q, k, v, table, cotangent, **kwargs):
    """Output and the gradients of sum(out * cotangent) w.r.t. q, k, v and the bias table."""
    @jax.jit
    def run(q, k, v, table):
        out, vjp = jax.vjp(lambda *a: attn(*a[:3], bias_table=a[3], **kwargs), q, k, v, table)
        return out, vjp(cotangent.astype(out.dtype))
    return run(q, k, v, table)


# ----------------------------------------------------------------------------- reference


def test_prefix_mask_by_hand():
    """One packed row: segment 1 = 3 tokens with a 2-token prefix, segment 2 = 4 tokens, all
    prefix, then one padding position (flagged as prefix, which must not unmask it)."""
    seg = jnp.asarray([[1, 1, 1, 2, 2, 2, 2, 0]], jnp.int32)
    prefix = jnp.asarray([[1, 1, 0, 1, 1, 1, 1, 1]], jnp.int32)
    want = np.array([
        # k: 0  1  2  3  4  5  6  7
        [1, 1, 0, 0, 0, 0, 0, 0],  # q0: prefix, sees the whole prefix of its segment
        [1, 1, 0, 0, 0, 0, 0, 0],  # q1
        [1, 1, 1, 0, 0, 0, 0, 0],  # q2: target, causal
        [0, 0, 0, 1, 1, 1, 1, 0],  # q3..q6: a fully-prefix segment is bidirectional
        [0, 0, 0, 1, 1, 1, 1, 0],
        [0, 0, 0, 1, 1, 1, 1, 0],
        [0, 0, 0, 1, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],  # q7: padding
    ], bool)
    got = reference.attention_mask(8, 8, q_segment_ids=seg, kv_segment_ids=seg, causal=True,
                                   prefix=prefix)
    np.testing.assert_array_equal(np.asarray(got)[0, 0], want)
    # Without segment ids the row is one sequence: prefix tokens 0, 1, 3..7 all see each other.
    got = reference.attention_mask(8, 8, causal=True, prefix=prefix.astype(bool))
    causal = np.tril(np.ones((8, 8), bool))
    flags = np.asarray(prefix[0], bool)
    np.testing.assert_array_equal(np.asarray(got)[0, 0], causal | np.outer(flags, flags))


def test_gqa_reference_equals_repeated_kv_heads():
    """Grouped k/v heads == multi-head attention on k/v repeated per group (query head h reads
    kv head h // group); the grouped dk/dv are the repeated ones summed over each group."""
    heads, kv_heads, length = 6, 2, 12
    group = heads // kv_heads
    q, k, v, table, cotangent = _qkv(jax.random.PRNGKey(0), 2, length, length, heads, kv_heads, 8)
    seg, prefix = _packed([(length, [(5, 2), (7, 0)]), (length, [(4, 4), (6, 3)])])
    kwargs = dict(q_segment_ids=seg, kv_segment_ids=seg, causal=True, prefix=prefix,
                  sm_scale=0.3, bidirectional=False, max_distance=16)
    out, (dq, dk, dv, dtab) = _vjp(reference_attention, q, k, v, table, cotangent, **kwargs)
    rep = lambda x: jnp.repeat(x, group, axis=2)
    want_out, (wdq, wdk, wdv, wdtab) = _vjp(reference_attention, q, rep(k), rep(v), table,
                                            cotangent, **kwargs)
    unrep = lambda g: g.reshape(*g.shape[:2], kv_heads, group, g.shape[-1]).sum(3)
    assert _norm_err(out, want_out) < F32_TOL
    assert _norm_err(dq, wdq) < F32_TOL
    assert _norm_err(dk, unrep(wdk)) < F32_TOL
    assert _norm_err(dv, unrep(wdv)) < F32_TOL
    assert _norm_err(dtab, wdtab) < F32_TOL
    # Multi-query (one kv head) through attention(), the models' entry point.
    mqa = jax.jit(lambda q, k, v: attention(q, k, v, causal=True, prefix=prefix))
    out1 = mqa(q, k[:, :, :1], v[:, :, :1])
    want1 = mqa(q, jnp.repeat(k[:, :, :1], heads, axis=2), jnp.repeat(v[:, :, :1], heads, axis=2))
    assert _norm_err(out1, want1) < F32_TOL


def test_prefix_decoding_chunk_matches_full_rows():
    """A chunk of queries at q_offset (prefill into a longer cache) sees exactly the rows of the
    full-sequence prefix-LM attention."""
    length, start, n = 16, 5, 6
    q, k, v, table, _ = _qkv(jax.random.PRNGKey(1), 2, length, length, 4, 2, 8)
    seg, prefix = _packed([(length, [(9, 7), (7, 2)]), (length, [(16, 0)])])
    kwargs = dict(q_segment_ids=seg, kv_segment_ids=seg, causal=True, prefix=prefix,
                  bias_table=table, bidirectional=False, max_distance=16)
    full = jax.jit(lambda q, k, v: reference_attention(q, k, v, **kwargs))(q, k, v)
    kwargs["q_segment_ids"] = seg[:, start:start + n]
    chunk = jax.jit(lambda q, k, v: attention(q, k, v, q_offset=start, **kwargs))(
        q[:, start:start + n], k, v)
    assert _norm_err(chunk, full[:, start:start + n]) < F32_TOL


@pytest.mark.parametrize("implementation", ["xla", "pallas", "cudnn"])
def test_uneven_head_groups_are_refused_naming_both_counts(implementation):
    q, k, v = jnp.zeros((1, 16, 6, 8)), jnp.zeros((1, 16, 4, 8)), jnp.zeros((1, 16, 4, 8))
    with pytest.raises(ValueError, match=r"6 query heads.*4 key/value heads"):
        attention(q, k, v, implementation=implementation)


def test_prefix_needs_causal_and_cudnn_refuses_it():
    q = k = v = jnp.zeros((1, 16, 2, 8))
    prefix = jnp.ones((1, 16), jnp.int32)
    with pytest.raises(ValueError, match="causal=True"):
        attention(q, k, v, prefix=prefix)
    with pytest.raises(ValueError, match="prefix-LM"):
        attention(q, k, v, causal=True, prefix=prefix, implementation="cudnn")
    with pytest.raises(ValueError, match="prefix must be"):
        attention(q, k, v, causal=True, prefix=prefix[:, :8])


# ----------------------------------------------------------------------------- Pallas kernel
# Interpret mode on CPU; blocks of 16-32 so that every case spans several tiles, and lengths off
# the block size. Each case compiles forward and backward together once.

from flan_mix.kernels import flash_attention as fa  # noqa: E402
from flan_mix.kernels.flash_attention import BlockSizes, flash_attention  # noqa: E402

BF16_TOL = 2e-2
SMALL = BlockSizes(16, 16, 16, 16, 16, 16)
MIXED = BlockSizes(block_q=32, block_k=16, block_q_dkv=16, block_k_dkv=32, block_q_dq=32,
                   block_k_dq=16)
# (length, [(segment length, prefix length), ...]) per row: packed segments with a partial, an
# empty and a full prefix, padding at the end; and one unpacked row with a long prefix.
PACKED = [(40, [(12, 5), (9, 9), (7, 0), (9, 4)]), (40, [(40, 23)])]
# Segment ids that are neither contiguous nor small (4 reappears after 1000), which the kernel's
# loop bounds must survive.
ODD_IDS = (np.array([[4] * 10 + [1000] * 14 + [4] * 8 + [0] * 8, [7] * 40], np.int32),
           np.array([[1] * 6 + [0] * 4 + [1] * 12 + [0] * 2 + [1] * 3 + [0] * 13, [0] * 40],
                    np.int32))

KERNEL_CASES = [
    # name, dtype, kv_heads, segments ("packed", "odd" or None), prefix?, bias?, blocks
    ("mqa_prefix_rows", jnp.float32, 1, None, True, False, SMALL),
    ("gqa_prefix_packed", jnp.float32, 2, "packed", True, False, MIXED),
    ("mha_prefix_packed_bias", jnp.float32, 4, "packed", True, True, SMALL),
    ("gqa_prefix_odd_ids", jnp.float32, 2, "odd", True, False, SMALL),
    ("gqa_causal_packed_bias", jnp.float32, 2, "packed", False, True, MIXED),
    ("bf16_gqa_prefix_packed_bias", jnp.bfloat16, 2, "packed", True, True, MIXED),
]


def _case_inputs(dtype, kv_heads, segments, with_prefix, seed=0, length=40, heads=4,
                 head_dim=16):
    q, k, v, table, cotangent = _qkv(jax.random.PRNGKey(seed), 2, length, length, heads,
                                     kv_heads, head_dim, dtype)
    seg, prefix = _packed(PACKED)
    if segments == "odd":
        seg, prefix = jnp.asarray(ODD_IDS[0]), jnp.asarray(ODD_IDS[1])
    kwargs = dict(causal=True, bidirectional=False, max_distance=16)
    if segments is not None:
        kwargs.update(q_segment_ids=seg, kv_segment_ids=seg)
    if with_prefix:
        kwargs["prefix"] = prefix
    return q, k, v, table, cotangent, kwargs


def _check_against_reference(attn, q, k, v, table, cotangent, use_bias, tol, **kwargs):
    tab = table if use_bias else None
    out, grads = _vjp(lambda *a, bias_table, **kw: attn(*a, bias_table=tab, **kw),
                      q, k, v, table, cotangent, **kwargs)
    f32 = lambda x: x.astype(jnp.float32)
    want_out, want_grads = _vjp(lambda *a, bias_table, **kw: reference_attention(
        *a, bias_table=tab, **kw), f32(q), f32(k), f32(v), table, cotangent, **kwargs)
    assert out.dtype == q.dtype and out.shape == q.shape
    assert _norm_err(out, want_out) < tol, "forward"
    for name, got, want, x in zip(["dq", "dk", "dv", "d_table"], grads, want_grads,
                                  (q, k, v, table)):
        assert got.dtype == x.dtype and got.shape == x.shape, name
        if name != "d_table" or use_bias:
            assert _norm_err(got, want) < tol, name
    return out


@pytest.mark.parametrize("name,dtype,kv_heads,segments,with_prefix,use_bias,blocks",
                         KERNEL_CASES, ids=[c[0] for c in KERNEL_CASES])
def test_kernel_matches_reference(name, dtype, kv_heads, segments, with_prefix, use_bias,
                                  blocks):
    q, k, v, table, cotangent, kwargs = _case_inputs(dtype, kv_heads, segments, with_prefix)
    tol = F32_TOL if dtype == jnp.float32 else BF16_TOL
    if name == "gqa_prefix_packed":  # through the models' entry point
        attn = lambda *a, **kw: attention(*a, implementation="pallas", block_sizes=blocks, **kw)
    else:
        attn = lambda *a, **kw: flash_attention(*a, block_sizes=blocks, **kw)
    out = _check_against_reference(attn, q, k, v, table, cotangent, use_bias, tol, **kwargs)
    if with_prefix:  # the prefix must matter, or the case tests nothing
        causal_only = dict(kwargs, prefix=None)
        plain = reference_attention(q.astype(jnp.float32), k.astype(jnp.float32),
                                    v.astype(jnp.float32), **causal_only)
        assert _norm_err(out, plain) > 0.1


def test_gqa_cross_attention_kernel():
    """Grouped heads without causal masking, q shorter than kv, packed."""
    q, _, _, table, cotangent = _qkv(jax.random.PRNGKey(4), 2, 24, 24, 4, 2, 16)
    _, k, v, _, _ = _qkv(jax.random.PRNGKey(5), 2, 40, 40, 4, 2, 16)
    q_seg, _ = _packed([(24, [(10, 0), (14, 0)]), (24, [(20, 0)])])
    kv_seg, _ = _packed([(40, [(25, 0), (15, 0)]), (40, [(33, 0)])])
    _check_against_reference(lambda *a, **kw: flash_attention(*a, block_sizes=MIXED, **kw),
                             q, k, v, table, cotangent, True, F32_TOL, q_segment_ids=q_seg,
                             kv_segment_ids=kv_seg, bidirectional=True, max_distance=16)


@pytest.mark.parametrize("backend,length,head_dim,blocks", [
    ("gpu", 50, 40, BlockSizes(32, 16, 16, 32, 32, 16)),  # Triton tiles, head dim 40 -> 64
    ("tpu", 200, 64, None),                               # [B, H, L, D], 128 tiles, SMEM bounds
])
def test_backend_configurations_under_interpreter(backend, length, head_dim, blocks):
    q, k, v, table, cotangent = _qkv(jax.random.PRNGKey(6), 2, length, length, 4, 2, head_dim)
    third = length // 3
    seg, prefix = _packed([(length, [(third, third // 2), (third, 0), (length - 2 * third - 3,
                                                                       length // 4)])] * 2)
    _check_against_reference(
        lambda *a, **kw: flash_attention(*a, block_sizes=blocks, backend=backend,
                                         interpret=True, **kw),
        q, k, v, table, cotangent, True, F32_TOL, q_segment_ids=seg, kv_segment_ids=seg,
        causal=True, prefix=prefix, bidirectional=False, max_distance=16)


# ----------------------------------------------------------------------------- loop bounds


def _visible_tiles(mask, bq, bk, padded_length):
    """[B, nq, nk]: tiles holding at least one visible (query, key) pair."""
    b, length, _ = mask.shape
    nq, nk = padded_length // bq, padded_length // bk
    padded = np.zeros((b, padded_length, padded_length), bool)
    padded[:, :length, :length] = mask
    return padded.reshape(b, nq, bq, nk, bk).any(axis=(2, 4))


@pytest.mark.parametrize("layout", ["packed", "odd", "no_segments"])
@pytest.mark.parametrize("bq,bk", [(8, 8), (8, 32), (32, 8)])
def test_prefix_loop_bounds_cover_every_visible_tile(layout, bq, bk):
    """Brute force: every tile with a visible pair in the reference's mask lies inside the
    kernel's loops (kv loop per q block, q loop per kv block), and for packed rows the bounds
    still skip tiles above the diagonal."""
    seg, prefix = _packed(PACKED)
    if layout == "odd":
        seg, prefix = jnp.asarray(ODD_IDS[0]), jnp.asarray(ODD_IDS[1])
    segs = None if layout == "no_segments" else seg
    length = prefix.shape[1]
    pad = -(-length // np.lcm(bq, bk)) * np.lcm(bq, bk)
    mask = np.asarray(reference.attention_mask(length, length, q_segment_ids=segs,
                                               kv_segment_ids=segs, causal=True,
                                               prefix=prefix))[:, 0]
    needed = _visible_tiles(mask, bq, bk, pad)
    reach, first = fa._prefix_reach(prefix, segs, segs)
    padded = lambda x, fill: jnp.pad(x, ((0, 0), (0, pad - length)), constant_values=fill)
    pre = fa._Prefix(None, None, padded(reach, 0), padded(first, fa._FAR))
    nq, nk = pad // bq, pad // bk
    ends = np.asarray(fa._kv_loop_ends(pre, bq, bk))
    starts = np.asarray(fa._q_loop_starts(pre, bq, bk))
    i, j = np.arange(nq)[:, None], np.arange(nk)[None, :]
    causal_tiles = j * bk <= i * bq + bq - 1
    by_kv_loop = causal_tiles | (j < ends[:, :, None])
    by_q_loop = causal_tiles | (i >= starts[:, None, :])
    assert not np.any(needed & ~by_kv_loop) and not np.any(needed & ~by_q_loop)
    if layout == "packed" and bq == bk == 8:
        # Row 0, q block 1 (positions 8-15) holds prefix queries of segments 1 and 2, whose
        # prefixes end at 4 and 20: kv block 3 (24-31) is skipped both ways, where a bound per
        # row (the row's last prefix token is 31) would visit it.
        assert not by_kv_loop[0, 1, 3] and not by_q_loop[0, 1, 3]
        assert by_kv_loop[0, 1, 2] and by_q_loop[0, 1, 2]
        assert by_kv_loop[1, 0, 2] and by_q_loop[1, 0, 2]  # row 1: a 23-token prefix


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bias", [None, (8, True, 16), (8, False, 16)])
def test_block_ranges_with_prefix_bounds(causal, bias):
    """The extended ranges visit each tile once: the causal tiles, then every tile up to the
    prefix bound, with a bias form valid for the whole tile and causal(+prefix) masking on every
    tile that reaches past the diagonal."""
    buckets = None if bias is None else fa._bucket_intervals(*bias)
    st = fa._Static(backend="cpu", interpret=True, layout="blhd", causal=causal, sm_scale=1.0,
                    kv_len=0, mask_kv_tail=False, has_segments=False, buckets=buckets,
                    blocks=SMALL, has_prefix=causal)
    for bq, bk, nq, nk in [(16, 16, 7, 7), (32, 16, 3, 8), (16, 64, 9, 2)]:
        def check(kind, i, j):
            dmin, dmax = j * bk - (i * bq + bq - 1), j * bk + bk - 1 - i * bq
            if kind.bias == "first":
                assert dmax < buckets.first_end
            if kind.bias == "last":
                assert dmin >= buckets.last_start
            if causal and not kind.causal:
                assert dmax <= 0

        for bound in range(0, max(nq, nk) + 2):
            for i in range(nq):
                ranges = fa._kv_ranges(jnp.int32(i), st=st, bq=bq, bk=bk, nk=nk,
                                       prefix_end=jnp.int32(bound))
                visited = [(j, kind) for lo, hi, kind in ranges for j in range(int(lo), int(hi))]
                for j, kind in visited:
                    check(kind, i, j)
                causal_end = min((i * bq + bq - 1) // bk + 1, nk) if causal else nk
                assert [j for j, _ in visited] == list(range(max(causal_end, min(bound, nk))
                                                             if causal else nk))
            for j in range(nk):
                ranges = fa._q_ranges(jnp.int32(j), st=st, bq=bq, bk=bk, nq=nq,
                                      prefix_start=jnp.int32(bound))
                visited = [(i, kind) for lo, hi, kind in ranges for i in range(int(lo), int(hi))]
                for i, kind in visited:
                    check(kind, i, j)
                causal_start = min(j * bk // bq, nq) if causal else 0
                assert [i for i, _ in visited] == list(range(min(causal_start, bound), nq))


def test_kernel_refuses_bad_gqa_and_prefix_inputs():
    x = lambda heads: jnp.zeros((1, 32, heads, 8))
    with pytest.raises(ValueError, match=r"6 query heads.*4 key/value heads"):
        flash_attention(x(6), x(4), x(4))
    q, k, v = x(4), x(2), x(2)
    prefix = jnp.ones((1, 32), jnp.int32)
    with pytest.raises(ValueError, match="causal=True"):
        flash_attention(q, k, v, prefix=prefix)
    with pytest.raises(ValueError, match="self-attention"):
        flash_attention(q[:, :16], k, v, causal=True, prefix=prefix)
    with pytest.raises(ValueError, match="self-attention"):
        flash_attention(q, k, v, causal=True, prefix=prefix[:, :16])
    with pytest.raises(ValueError, match="int or bool"):
        flash_attention(q, k, v, causal=True, prefix=prefix.astype(jnp.float32))


@pytest.mark.parametrize("platform,backend", [("cuda", "gpu"), ("tpu", "tpu")])
def test_gqa_prefix_lowers_for_accelerators(platform, backend):
    """Cross-lowers forward + backward with grouped heads, prefix bounds, segments and a bias to
    Triton (CUDA) and Mosaic (TPU): catches what a backend cannot lower, without the hardware."""
    b, length, heads, kv_heads, d = 2, 512, 8, 2, 64
    x = lambda h: jax.ShapeDtypeStruct((b, length, h, d), jnp.bfloat16)
    ints = jax.ShapeDtypeStruct((b, length), jnp.int32)

    def loss(q, k, v, seg, prefix, table):
        out = flash_attention(q, k, v, q_segment_ids=seg, kv_segment_ids=seg, causal=True,
                              prefix=prefix, bias_table=table, bidirectional=False,
                              backend=backend, interpret=False)
        return jnp.sum(out.astype(jnp.float32))

    grad = jax.grad(loss, argnums=(0, 1, 2, 5))
    lowered = jax.jit(grad).trace(x(heads), x(kv_heads), x(kv_heads), ints, ints,
                                  jax.ShapeDtypeStruct((heads, 32), jnp.float32)).lower(
        lowering_platforms=(platform,))
    text = lowered.as_text()
    assert text.count("__gpu$xla.gpu.triton" if backend == "gpu" else "tpu_custom_call") >= 3
