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
    out1 = attention(q, k[:, :, :1], v[:, :, :1], causal=True, prefix=prefix)
    want1 = reference_attention(q, jnp.repeat(k[:, :, :1], heads, axis=2),
                                jnp.repeat(v[:, :, :1], heads, axis=2), causal=True,
                                prefix=prefix)
    assert _norm_err(out1, want1) < F32_TOL


def test_prefix_decoding_chunk_matches_full_rows():
    """A chunk of queries at q_offset (prefill into a longer cache) sees exactly the rows of the
    full-sequence prefix-LM attention."""
    length, start, n = 16, 5, 6
    q, k, v, table, _ = _qkv(jax.random.PRNGKey(1), 2, length, length, 4, 2, 8)
    seg, prefix = _packed([(length, [(9, 7), (7, 2)]), (length, [(16, 0)])])
    kwargs = dict(q_segment_ids=seg, kv_segment_ids=seg, causal=True, prefix=prefix,
                  bias_table=table, bidirectional=False, max_distance=16)
    full = reference_attention(q, k, v, **kwargs)
    kwargs["q_segment_ids"] = seg[:, start:start + n]
    chunk = attention(q[:, start:start + n], k, v, q_offset=start, **kwargs)
    assert _norm_err(chunk, full[:, start:start + n]) < F32_TOL


@pytest.mark.parametrize("implementation", ["xla", "pallas", "cudnn"])
def test_uneven_head_groups_are_refused_naming_both_counts(implementation):
    q, k, v, _, _ = _qkv(jax.random.PRNGKey(2), 1, 16, 16, 6, 4, 8)
    with pytest.raises(ValueError, match=r"6 query heads.*4 key/value heads"):
        attention(q, k, v, implementation=implementation)


def test_prefix_needs_causal_and_cudnn_refuses_it():
    q, k, v, _, _ = _qkv(jax.random.PRNGKey(3), 1, 16, 16, 2, 2, 8)
    prefix = jnp.ones((1, 16), jnp.int32)
    with pytest.raises(ValueError, match="causal=True"):
        attention(q, k, v, prefix=prefix)
    with pytest.raises(ValueError, match="prefix-LM"):
        attention(q, k, v, causal=True, prefix=prefix, implementation="cudnn")
    with pytest.raises(ValueError, match="prefix must be"):
        attention(q, k, v, causal=True, prefix=prefix[:, :8])
