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

On a device mesh, "pallas" runs the kernel under shard_map: every device attends over its own
rows and heads, which is exact because attention never mixes rows or heads. The mesh is the one
in context (`with jax.set_mesh(mesh):`, or the older `with mesh:` the trainer enters); the mesh
axes come from flax's logical axis rules in context ("batch" and "heads"; without rules: data and
fsdp for the batch, model for the heads). Without a mesh, or on one device, the kernel is called
directly.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
from jax.sharding import PartitionSpec as P

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
        return _pallas_attention(q, k, v, block_sizes=block_sizes, **kwargs)
    if implementation == "cudnn":
        return _cudnn_attention(q, k, v, **kwargs)
    raise ValueError(f"unknown attention implementation {implementation!r}; "
                     f"choose one of {IMPLEMENTATIONS} (gin: ATTENTION_IMPL).")


# Mesh axes for the kernel's batch and heads dimensions when no logical axis rules are in context.
DEFAULT_KERNEL_AXES = {"batch": ("data", "fsdp"), "heads": ("model",)}


def current_mesh():
    """The mesh in context, or None: jax.set_mesh's (abstract) mesh, else the legacy `with mesh:`."""
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty:
        return mesh
    try:  # `with mesh:` (deprecated in jax 0.10) sets only the legacy thread-local resource env.
        from jax._src import mesh as mesh_lib
        mesh = mesh_lib.thread_resources.env.physical_mesh
    except (ImportError, AttributeError):
        return None
    return None if mesh.empty else mesh


def _as_tuple(axes) -> tuple[str, ...]:
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def kernel_partition(mesh, batch: int, heads: int, kv_heads: int):
    """(batch mesh axes, head mesh axes) the kernel is split over on `mesh`.

    The logical rules in context name the axes (flax resolves "batch" and "heads" together, so a
    mesh axis is used once). Axes missing from the mesh, already manual (inside another
    shard_map) or of size 1 are left out. A batch axis that does not divide the batch is left
    out too (those rows are then computed on every device of that axis, e.g. a small decoding
    batch); the head axes must divide both the query and the kv heads.
    """
    rules = nn.get_logical_axis_rules()
    if rules:
        spec = nn.logical_to_mesh_axes(("batch", "heads"), rules)
        batch_axes, head_axes = _as_tuple(spec[0]), _as_tuple(spec[1])
    else:
        batch_axes, head_axes = DEFAULT_KERNEL_AXES["batch"], DEFAULT_KERNEL_AXES["heads"]
    manual = set(getattr(mesh, "manual_axes", ()))
    usable = lambda a: a in mesh.shape and a not in manual and mesh.shape[a] > 1
    kept = []
    for axis in filter(usable, batch_axes):
        if batch % (math.prod(mesh.shape[a] for a in kept) * mesh.shape[axis]) == 0:
            kept.append(axis)
    head_axes = tuple(filter(usable, head_axes))
    split = math.prod(mesh.shape[a] for a in head_axes)
    if heads % split or kv_heads % split:
        raise ValueError(
            f"attention(implementation='pallas') on a mesh splits the heads over mesh axes "
            f"{head_axes} ({split} ways), but the model has {heads} query heads and {kv_heads} kv "
            f"heads; both must be divisible by {split}. Use a model mesh axis that divides the kv "
            f"heads (gin: make_mesh.model), or map 'heads' to no mesh axis in the logical axis "
            f"rules (logical_axis_rules.additional_rules).")
    return tuple(kept), head_axes


def _pallas_attention(q, k, v, *, block_sizes, q_segment_ids, kv_segment_ids, prefix, bias_table,
                      **static):
    from flan_mix.kernels import flash_attention  # imported lazily: Pallas is heavy to load

    def kernel(arrays):
        return flash_attention.flash_attention(arrays["q"], arrays["k"], arrays["v"],
                                               q_segment_ids=arrays.get("q_segment_ids"),
                                               kv_segment_ids=arrays.get("kv_segment_ids"),
                                               prefix=arrays.get("prefix"),
                                               bias_table=arrays.get("bias_table"),
                                               block_sizes=block_sizes, **static)

    arrays = dict(q=q, k=k, v=v, q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids,
                  prefix=prefix, bias_table=bias_table)
    arrays = {name: x for name, x in arrays.items() if x is not None}
    mesh = current_mesh()
    if mesh is None:
        return kernel(arrays)
    batch_axes, head_axes = kernel_partition(mesh, q.shape[0], q.shape[2], k.shape[2])
    if not batch_axes and not head_axes:
        return kernel(arrays)
    b, h = batch_axes or None, head_axes or None
    specs = {name: P(b, None, h, None) if name in ("q", "k", "v") else
             P(h, None) if name == "bias_table" else P(b, None) for name in arrays}
    # check_vma=False: the kernel's pallas_call/custom_vjp carry no varying-axes annotations. The
    # transpose then sums the bias-table gradient over the batch axes, as it should.
    sharded = jax.shard_map(kernel, mesh=mesh, in_specs=(specs,), out_specs=P(b, None, h, None),
                            check_vma=False)
    return sharded(arrays)


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
