"""Plain-XLA attention: the ground truth for the Pallas kernel and the "xla" implementation.

Layout everywhere in flan_mix: q [B, Lq, H, D], k and v [B, Lk, H, D] (the layout of
jax.nn.dot_product_attention). Segment ids are int32 [B, L]; 0 marks padding, and a query
attends only to keys of its own (non-zero) segment.

T5's relative position bias is passed as the per-head bucket table [H, num_buckets]. The bucket
of a (query, key) pair depends on k_pos - q_pos over the whole packed row, as in t5x (positions
are not reset at segment starts).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

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
                   causal: bool = False, q_offset: int = 0):
    """Boolean [B or 1, 1, Lq, Lk] mask: True where the query may attend to the key."""
    mask = jnp.ones((1, 1, q_len, kv_len), dtype=bool)
    if causal:
        q_pos = jnp.arange(q_len)[:, None] + q_offset
        k_pos = jnp.arange(kv_len)[None, :]
        mask = mask & (k_pos <= q_pos)[None, None]
    if (q_segment_ids is None) != (kv_segment_ids is None):
        raise ValueError("pass both q_segment_ids and kv_segment_ids, or neither")
    if q_segment_ids is not None:
        same = q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]
        real = (q_segment_ids[:, :, None] != 0) & (kv_segment_ids[:, None, :] != 0)
        mask = mask & (same & real)[:, None]
    return mask


def reference_attention(q, k, v, *, q_segment_ids=None, kv_segment_ids=None, causal: bool = False,
                        sm_scale: float = 1.0, bias_table=None, bidirectional: bool = True,
                        max_distance: int = 128, q_offset: int = 0):
    """softmax(sm_scale * q k^T + bias, masked) v, computed in float32 and cast back to q.dtype.

    Queries with no visible key (padding, or everything masked) return zeros, never NaN.
    """
    _, q_len, _, _ = q.shape
    kv_len = k.shape[1]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32))
    logits = logits * sm_scale
    if bias_table is not None:
        bias = relative_position_bias(bias_table.astype(jnp.float32), q_len, kv_len,
                                      bidirectional=bidirectional, max_distance=max_distance,
                                      q_offset=q_offset)
        logits = logits + bias[None]
    mask = attention_mask(q_len, kv_len, q_segment_ids=q_segment_ids,
                          kv_segment_ids=kv_segment_ids, causal=causal, q_offset=q_offset)
    logits = jnp.where(mask, logits, MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1)
    probs = jnp.where(mask, probs, 0.0)  # rows with no visible key become all-zero
    out = jnp.einsum("bhqk,bkhd->bqhd", probs, v.astype(jnp.float32))
    return out.astype(q.dtype)
