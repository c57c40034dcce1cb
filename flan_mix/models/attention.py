"""The one attention entry point of flan_mix.

Every model calls attention(); `implementation` picks the backend:
  "xla"    - flan_mix.kernels.reference: plain XLA, materializes the [B, H, Q, K] logits.
  "pallas" - flan_mix.kernels.flash_attention: fused masks and T5 bias, O(L) memory.
  "cudnn"  - jax.nn.dot_product_attention(implementation="cudnn"); it has no segment ids, no
             T5 bias and no prefix-LM mask, so such calls are refused rather than silently
             computed differently.
Layout: q [B, Lq, H, D], k and v [B, Lk, Hkv, D] with H % Hkv == 0 (grouped-query attention:
query head h reads kv head h // (H // Hkv), in every implementation); segment ids int32 [B, L]
with 0 = padding.
"""
from __future__ import annotations

import jax

from flan_mix.kernels import reference

IMPLEMENTATIONS = ("xla", "pallas", "cudnn")


def attention(q, k, v, *, q_segment_ids=None, kv_segment_ids=None, causal: bool = False,
              bias_table=None, bidirectional: bool = True, max_distance: int = 128,
              sm_scale: float = 1.0, q_offset: int = 0, implementation: str = "xla",
              block_sizes=None, prefix=None):
    """Scaled dot-product attention with packing masks and an optional T5 bias table [H, buckets].

    q_offset shifts query positions (for incremental decoding); only "xla" supports it.
    prefix: optional int/bool [B, Lk] prefix-LM input flags (needs causal=True): flagged queries
      also see later flagged keys of their segment (t5x decoder_causal_attention). With "xla"
      and q_offset, query i reads the flag at position q_offset + i; "pallas" needs Lq == Lk.
    block_sizes: the Pallas kernel's tiles (flash_attention.BlockSizes); None picks its default.
    """
    kwargs = dict(q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids, causal=causal,
                  sm_scale=sm_scale, bias_table=bias_table, bidirectional=bidirectional,
                  max_distance=max_distance, prefix=prefix)
    reference.kv_group_size(q.shape[-2], k.shape[-2])  # one error message for every backend
    if implementation == "xla":
        return reference.reference_attention(q, k, v, q_offset=q_offset, **kwargs)
    if q_offset:
        raise ValueError(f"attention(implementation={implementation!r}) has no q_offset; "
                         "incremental decoding runs with implementation='xla'.")
    if implementation == "pallas":
        from flan_mix.kernels import flash_attention  # imported lazily: Pallas is heavy to load
        return flash_attention.flash_attention(q, k, v, block_sizes=block_sizes, **kwargs)
    if implementation == "cudnn":
        return _cudnn_attention(q, k, v, **kwargs)
    raise ValueError(f"unknown attention implementation {implementation!r}; "
                     f"choose one of {IMPLEMENTATIONS} (gin: ATTENTION_IMPL).")


def _cudnn_attention(q, k, v, *, q_segment_ids, kv_segment_ids, causal, sm_scale, bias_table,
                     bidirectional, max_distance, prefix):
    del bidirectional, max_distance
    unsupported = []
    if q_segment_ids is not None or kv_segment_ids is not None:
        unsupported.append("segment ids (packed rows or padding masks)")
    if bias_table is not None:
        unsupported.append("a T5 relative-position bias")
    if prefix is not None:
        unsupported.append("a prefix-LM mask (prefix=...)")
    if unsupported:
        raise ValueError(
            "ATTENTION_IMPL='cudnn' (jax.nn.dot_product_attention) cannot express "
            + " or ".join(unsupported)
            + "; use ATTENTION_IMPL='pallas' (fused) or 'xla' (reference) for this model.")
    # dot_product_attention takes k/v with fewer heads as they are (same grouping convention).
    return jax.nn.dot_product_attention(q, k, v, scale=sm_scale, is_causal=causal,
                                        implementation="cudnn")
