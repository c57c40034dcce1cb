"""Building blocks of T5 1.1 in Flax Linen; every parameter carries logical axis names.

Logical axes: batch, length, embed, mlp, heads, kv, vocab, relpos_buckets (see
flan_mix/runtime/partitioning.py for how they map onto the mesh).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from flan_mix.models.attention import attention

Dtype = Any


def _init(scale: float, mode: str = "fan_in", distribution: str = "truncated_normal"):
    return nn.initializers.variance_scaling(scale, mode, distribution)


def constrain(x, axes: Sequence[str | None]):
    """Activation sharding hint by logical names; a no-op outside a mesh/rules context."""
    return nn.with_logical_constraint(x, tuple(axes))


class RMSNorm(nn.Module):
    """T5's layer norm: scale only, no mean subtraction and no bias; computed in float32."""
    epsilon: float = 1e-6
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                           (x.shape[-1],), jnp.float32)
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
        return (x32 * scale).astype(self.dtype)


class Embed(nn.Module):
    """Token embedding [vocab, embed]; attend() reuses it as a tied output layer.

    init_std: T5 initialises with 1.0; LLaMA with 0.02 (HF's initializer_range), which keeps
    tied logits near 0.02 * sqrt(embed) at the start.
    """
    num_embeddings: int
    features: int
    dtype: Dtype = jnp.float32
    init_std: float = 1.0

    def setup(self):
        self.embedding = self.param(
            "embedding", nn.with_logical_partitioning(nn.initializers.normal(self.init_std), ("vocab", "embed")),
            (self.num_embeddings, self.features), jnp.float32)

    def __call__(self, ids):
        return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

    def attend(self, x):
        return jnp.einsum("ble,ve->blv", x.astype(self.dtype), self.embedding.astype(self.dtype))


class DenseGeneral(nn.Module):
    """x[..., in_axes] @ kernel -> [..., out_features]; kernel axes named by `kernel_axes`."""
    features: tuple[int, ...]
    kernel_axes: tuple[str, ...]
    in_dims: int = 1  # how many trailing dims of x are contracted
    scale: float = 1.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        in_shape = tuple(x.shape[-self.in_dims:])
        # variance_scaling sees the flattened [fan_in, fan_out] view, like t5x's DenseGeneral.
        def init(key, shape, dtype):
            flat_shape = (math.prod(in_shape), math.prod(self.features))
            return _init(self.scale)(key, flat_shape, dtype).reshape(shape)

        kernel = self.param("kernel", nn.with_logical_partitioning(init, self.kernel_axes),
                            in_shape + tuple(self.features), jnp.float32)
        contract = tuple(range(x.ndim - self.in_dims, x.ndim))
        return jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype),
                                   ((contract, tuple(range(self.in_dims))), ((), ())))


class GatedMLP(nn.Module):
    """T5 1.1 feed-forward: GeGLU (gelu(x W0) * (x W1)) W_out, dropout on the hidden layer."""
    mlp_dim: int
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool):
        embed = x.shape[-1]
        gate = DenseGeneral((self.mlp_dim,), ("embed", "mlp"), dtype=self.dtype, name="wi_0")(x)
        up = DenseGeneral((self.mlp_dim,), ("embed", "mlp"), dtype=self.dtype, name="wi_1")(x)
        hidden = nn.gelu(gate, approximate=True) * up
        hidden = constrain(hidden, ("batch", "length", "mlp"))
        hidden = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(hidden, deterministic=deterministic)
        return DenseGeneral((embed,), ("mlp", "embed"), dtype=self.dtype, name="wo")(hidden)


class RelativePositionBias(nn.Module):
    """The per-head table of T5's bucketed relative-position bias, shared by all layers of a stack.

    Returns the raw [heads, num_buckets] table: the attention backends expand it (the XLA path
    materializes [H, Q, K]; the Pallas kernel computes buckets from iota inside the kernel).
    """
    num_buckets: int
    num_heads: int

    @nn.compact
    def __call__(self):
        table = self.param(
            "rel_embedding",
            nn.with_logical_partitioning(_init(1.0, "fan_avg", "uniform"), ("heads", "relpos_buckets")),
            (self.num_heads, self.num_buckets), jnp.float32)
        return table


class MultiHeadAttention(nn.Module):
    """Projections around attention(); T5 uses no 1/sqrt(d) scaling (folded into the q init).

    decode=True is incremental decoding with a KV cache in the "cache" collection. The first
    call (on the full-length decoder buffer) only creates the cache: zeros for self-attention,
    and the projected encoder keys/values for cross-attention, which never change afterwards.
    Later calls take one token, write its key/value at cache_index and attend to the cache.
    """
    num_heads: int
    head_dim: int
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    implementation: str = "xla"
    block_sizes: Any = None  # Pallas tile sizes (kernels.flash_attention.BlockSizes)

    def _project(self, x, name, scale=1.0):
        return DenseGeneral((self.num_heads, self.head_dim), ("embed", "heads", "kv"), dtype=self.dtype,
                            scale=scale, name=name)(x)

    @nn.compact
    def __call__(self, x_q, x_kv, *, q_segment_ids, kv_segment_ids, causal: bool,
                 bias_table=None, bidirectional: bool = True, max_distance: int = 128,
                 deterministic: bool = True, decode: bool = False):
        embed = x_q.shape[-1]
        # T5's init puts the 1/sqrt(d_model * head_dim) factor on the query projection.
        q = self._project(x_q, "query", scale=1.0 / self.head_dim)
        q_offset, impl = 0, self.implementation
        if decode and causal:
            k, v, q_offset, q_segment_ids, kv_segment_ids = self._self_attention_cache(x_kv)
            impl = "xla"  # the only backend with q_offset; one query per step needs no fusion
        elif decode:
            k = self.variable("cache", "cross_key", lambda: self._project(x_kv, "key")).value
            v = self.variable("cache", "cross_value", lambda: self._project(x_kv, "value")).value
        else:
            k, v = self._project(x_kv, "key"), self._project(x_kv, "value")
        q = constrain(q, ("batch", "length", "heads", "kv"))
        k = constrain(k, ("batch", "length", "heads", "kv"))
        v = constrain(v, ("batch", "length", "heads", "kv"))
        out = attention(q, k, v, q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids,
                        causal=causal, bias_table=bias_table, bidirectional=bidirectional,
                        max_distance=max_distance, sm_scale=1.0, q_offset=q_offset,
                        implementation=impl, block_sizes=self.block_sizes)
        out = constrain(out, ("batch", "length", "heads", "kv"))
        return DenseGeneral((embed,), ("heads", "kv", "embed"), in_dims=2, dtype=self.dtype,
                            name="out")(out)

    def _self_attention_cache(self, x):
        """(keys, values, query offset, q/kv segment ids) for one decode step."""
        k, v = self._project(x, "key"), self._project(x, "value")
        created = not self.has_variable("cache", "cached_key")
        cached_k = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
        cached_v = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
        index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
        if created:  # the sizing call: plain causal attention over the buffer, cache left empty
            return k, v, 0, None, None
        if x.shape[1] != 1:
            raise ValueError(f"decode steps take one token at a time, got length {x.shape[1]}")
        i = index.value
        cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k, (0, i, 0, 0))
        cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v, (0, i, 0, 0))
        index.value = i + 1
        # The causal mask at offset i hides the cache slots not written yet.
        return cached_k.value, cached_v.value, i, None, None
