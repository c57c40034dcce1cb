"""Plain-XLA attention: the ground truth for the Pallas kernel and the "xla" implementation.

Layout everywhere in flan_mix: q [B, Lq, H, D], k and v [B, Lk, Hkv, D] (the layout of
jax.nn.dot_product_attention). Hkv may be smaller than H (grouped-query attention, multi-query
when Hkv == 1): H % Hkv == 0 and query head h reads kv head h // (H // Hkv), the HF Llama and
jax.nn.dot_product_attention convention. Segment ids are int32 [B, L]; 0 marks padding, and a
query attends only to keys of its own (non-zero) segment.

Prefix-LM (t5x/seqio `decoder_causal_attention`): with causal=True and prefix flags [B, Lk]
(non-zero = input token), a query also sees later keys of its segment when both it and the key
are flagged, i.e. the inputs attend bidirectionally among themselves and the targets causally.

T5's relative position bias is passed as the per-head bucket table [H, num_buckets]. The bucket
of a (query, key) pair depends on k_pos - q_pos over the whole packed row, as in t5x (positions
are not reset at segment starts).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Large negative instead of -inf so that fully masked rows stay finite (their output is zeroed).
MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)


def relative_position_bucket(relative_position, *, bidirectional: bool, num_buckets: int,
                             max_distance: int):
    """Maps k_pos - q_pos (int array) to T5 bucket ids in [0, num_buckets).

    Half of the buckets (per direction) hold exact small distances; the rest cover distances up
    to max_distance on a log scale, and everything farther shares the last bucket. With
    bidirectional=False (decoder) keys after the query all fall in bucket 0.
    Written with jnp ops only, so the Pallas kernel can call it on iota indices.
    """
    relative_position = jnp.asarray(relative_position, jnp.int32)
    # T5 measures distance as q_pos - k_pos: positive when the key lies in the past.
    distance = -relative_position
    bucket_offset = jnp.zeros_like(distance)
    if bidirectional:
        num_buckets //= 2
        bucket_offset = jnp.where(distance < 0, num_buckets, 0).astype(jnp.int32)
        distance = jnp.abs(distance)
    else:
        distance = jnp.maximum(distance, 0)
    num_exact = num_buckets // 2
    # log-spaced buckets for num_exact <= distance < max_distance
    scaled = jnp.log(distance.astype(jnp.float32) / num_exact + np.finfo(np.float32).eps)
    scaled = scaled / np.log(max_distance / num_exact) * (num_buckets - num_exact)
    log_bucket = jnp.minimum(num_exact + scaled.astype(jnp.int32), num_buckets - 1)
    return bucket_offset + jnp.where(distance < num_exact, distance, log_bucket)


def relative_position_bias(bias_table, q_len: int, kv_len: int, *, bidirectional: bool,
                           max_distance: int, q_offset: int = 0):
    """Materializes the [H, Lq, Lk] bias from the [H, num_buckets] table.

    q_offset shifts the query positions (a decoder step at position q_offset sees keys 0..kv_len).
    """
    num_buckets = bias_table.shape[-1]
    q_pos = jnp.arange(q_len, dtype=jnp.int32)[:, None] + q_offset
    k_pos = jnp.arange(kv_len, dtype=jnp.int32)[None, :]
    buckets = relative_position_bucket(k_pos - q_pos, bidirectional=bidirectional,
                                       num_buckets=num_buckets, max_distance=max_distance)
    return jnp.take(bias_table, buckets, axis=1)  # [H, Lq, Lk]


def attention_mask(q_len: int, kv_len: int, *, q_segment_ids=None, kv_segment_ids=None,
                   causal: bool = False, q_offset: int = 0, prefix=None):
    """Boolean [B or 1, 1, Lq, Lk] mask: True where the query may attend to the key.

    prefix: optional int/bool [B, Lk] input flags over the key positions (causal only); query i
    sits at position q_offset + i and reads its own flag there, so a decoding chunk sees exactly
    the rows of the full-sequence mask.
    """
    mask = jnp.ones((1, 1, q_len, kv_len), dtype=bool)
    if prefix is not None and not causal:
        raise ValueError("prefix (prefix-LM) needs causal=True: it only widens a causal mask "
                         "(without causal every key is already visible)")
    if causal:
        q_pos = jnp.arange(q_len)[:, None] + q_offset
        k_pos = jnp.arange(kv_len)[None, :]
        visible = (k_pos <= q_pos)[None]
        if prefix is not None:
            if prefix.ndim != 2 or prefix.shape[1] != kv_len or q_len > kv_len:
                raise ValueError(f"prefix must be [batch, kv_len={kv_len}] (self-attention, "
                                 f"q_len={q_len} <= kv_len); got shape {prefix.shape}")
            k_pre = prefix != 0
            q_pre = lax.dynamic_slice_in_dim(k_pre, q_offset, q_len, axis=1)
            visible = visible | (q_pre[:, :, None] & k_pre[:, None, :])
        mask = mask & visible[:, None]
    if (q_segment_ids is None) != (kv_segment_ids is None):
        raise ValueError("pass both q_segment_ids and kv_segment_ids, or neither")
    if q_segment_ids is not None:
        same = q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]
        real = (q_segment_ids[:, :, None] != 0) & (kv_segment_ids[:, None, :] != 0)
        mask = mask & (same & real)[:, None]
    return mask


def kv_group_size(num_heads: int, num_kv_heads: int) -> int:
    """Query heads per kv head; refuses head counts that do not group evenly."""
    if num_kv_heads < 1 or num_heads % num_kv_heads:
        raise ValueError(f"grouped-query attention needs the {num_heads} query heads to be a "
                         f"multiple of the {num_kv_heads} key/value heads")
    return num_heads // num_kv_heads


def reference_attention(q, k, v, *, q_segment_ids=None, kv_segment_ids=None, causal: bool = False,
                        sm_scale: float = 1.0, bias_table=None, bidirectional: bool = True,
                        max_distance: int = 128, q_offset: int = 0, prefix=None):
    """softmax(sm_scale * q k^T + bias, masked) v, computed in float32 and cast back to q.dtype.

    k and v may have fewer heads than q (grouped-query attention, see the module docstring);
    bias_table has one row per query head. prefix: see attention_mask.
    Queries with no visible key (padding, or everything masked) return zeros, never NaN.
    """
    batch, q_len, heads, head_dim = q.shape
    kv_len, kv_heads = k.shape[1], k.shape[2]
    if v.shape[2] != kv_heads:
        raise ValueError(f"k has {kv_heads} heads but v has {v.shape[2]}")
    group = kv_group_size(heads, kv_heads)
    # Query heads as [kv head, member]: h = kv_head * group + member, so no k/v copy is needed.
    qg = q.astype(jnp.float32).reshape(batch, q_len, kv_heads, group, head_dim)
    logits = jnp.einsum("bqhgd,bkhd->bhgqk", qg, k.astype(jnp.float32))
    logits = logits * sm_scale
    if bias_table is not None:
        bias = relative_position_bias(bias_table.astype(jnp.float32), q_len, kv_len,
                                      bidirectional=bidirectional, max_distance=max_distance,
                                      q_offset=q_offset)
        logits = logits + bias.reshape(kv_heads, group, q_len, kv_len)[None]
    mask = attention_mask(q_len, kv_len, q_segment_ids=q_segment_ids,
                          kv_segment_ids=kv_segment_ids, causal=causal, q_offset=q_offset,
                          prefix=prefix)[:, :, None]  # [B or 1, 1, 1, Lq, Lk]
    logits = jnp.where(mask, logits, MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1)
    probs = jnp.where(mask, probs, 0.0)  # rows with no visible key become all-zero
    out = jnp.einsum("bhgqk,bkhd->bqhgd", probs, v.astype(jnp.float32))
    return out.reshape(batch, q_len, heads, v.shape[-1]).astype(q.dtype)
