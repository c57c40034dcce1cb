"""A LLaMA-style decoder-only transformer in Flax Linen, readable top to bottom.

Pre-norm residual blocks, no biases:
    x = x + Attention(RMSNorm(x))   grouped-query self-attention with rotary position embeddings
    x = x + SwiGLU(RMSNorm(x))      down(silu(gate(x)) * up(x))
then a final RMSNorm and the logits (their own matrix, or the embedding's transpose when tied).
Computes what HF transformers' LlamaForCausalLM computes (rotate_half RoPE, query head h reads
kv head h // (num_heads // num_kv_heads)), so HF checkpoints load without permuting weights
(flan_mix.models.hf_llama).

Inputs are seqio's decoder features: decoder_input_tokens, decoder_positions (0, 1, ... restarting
in each packed segment, so RoPE sees every example as if it were alone in its row),
decoder_segment_ids (0 = padding) and, when LlamaConfig.prefix_lm is set,
decoder_causal_attention (the prefix that attends bidirectionally).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np

from flan_mix.models import layers
from flan_mix.models.attention import attention
from flan_mix.models.layers import DenseGeneral, constrain


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Llama3RopeScaling:
    """Llama 3.1/3.2's long-context RoPE ("rope_type": "llama3" in HF config.json): the rotary
    frequencies whose wavelength exceeds the original context are divided by `factor`, the high
    ones kept, and the band between interpolated smoothly."""
    factor: float = 32.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int | None = None  # None: the task vocabulary's size, padded to a multiple of 128
    emb_dim: int = 512
    num_layers: int = 8
    num_heads: int = 8
    num_kv_heads: int = 8  # < num_heads: grouped-query attention; 1: multi-query
    head_dim: int = 64
    mlp_dim: int = 1536
    rope_theta: float = 10000.0
    rope_scaling: Llama3RopeScaling | None = None
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    # The mode is part of the model (it changes what every position computes), not of the data:
    # False: a plain causal LM (decoder_causal_attention is ignored); True: prefix-LM (the inputs
    # attend bidirectionally, the targets causally).
    prefix_lm: bool = False
    # Ids of the vocabulary: bos_id starts every sequence's decoder input (seqio shifts in 0, and so
    # does flan_mix.data's packer; an imported HF Llama brings its own BOS, e.g. 1), and decoding
    # stops at eos_id (our SentencePiece vocab: 1; HF Llama 2: 2).
    bos_id: int = 0
    eos_id: int = 1
    dtype: str = "float32"  # activation dtype; parameters stay float32
    attention_impl: str = "xla"  # gin: ATTENTION_IMPL
    attention_block_sizes: Any = None  # kernels.flash_attention.BlockSizes; None: per-backend default

    def __post_init__(self):
        if self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads:
            raise ValueError(f"LlamaConfig: num_heads={self.num_heads} is not divisible by num_kv_heads="
                             f"{self.num_kv_heads}; grouped-query attention shares each key/value head among "
                             "num_heads // num_kv_heads query heads, so pick num_kv_heads dividing num_heads.")
        if self.head_dim % 2:
            raise ValueError(f"LlamaConfig: head_dim={self.head_dim} is odd; rotary embeddings rotate pairs "
                             "of dimensions.")

    @property
    def activation_dtype(self) -> Any:
        return jnp.dtype(self.dtype)


# ----------------------------------------------------------------------------------------------
# Rotary position embeddings.

def rope_frequencies(head_dim: int, theta: float, scaling: Llama3RopeScaling | None = None) -> np.ndarray:
    """The head_dim // 2 rotation frequencies, float32, computed as HF does (so logits match)."""
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    inv_freq = (1.0 / (np.float32(theta) ** exponents)).astype(np.float32)
    if scaling is None:
        return inv_freq
    s = scaling
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = np.float32(2 * math.pi) / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / np.float32(s.factor), inv_freq)
    smooth = ((s.original_max_position_embeddings / wavelen - s.low_freq_factor)
              / (s.high_freq_factor - s.low_freq_factor))
    smoothed = (1 - smooth) * scaled / np.float32(s.factor) + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def apply_rope(x, positions, inv_freq):
    """Rotates x [B, L, heads, D] by its token positions [B, L] (HF's rotate_half layout: the
    first and second halves of each head form the pairs). Computed in float32."""
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [B, L, D/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x32 = x.astype(jnp.float32)
    first, second = jnp.split(x32, 2, axis=-1)
    rotated = jnp.concatenate([-second, first], axis=-1)
    return (x32 * cos + rotated * sin).astype(x.dtype)


# ----------------------------------------------------------------------------------------------
# Blocks.

class SwiGLU(nn.Module):
    mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        gate = DenseGeneral((self.mlp_dim,), ("embed", "mlp"), dtype=self.dtype, name="wi_0")(x)
        up = DenseGeneral((self.mlp_dim,), ("embed", "mlp"), dtype=self.dtype, name="wi_1")(x)
        hidden = constrain(nn.silu(gate) * up, ("batch", "length", "mlp"))
        return DenseGeneral((x.shape[-1],), ("mlp", "embed"), dtype=self.dtype, name="wo")(hidden)


class Attention(nn.Module):
    """Grouped-query self-attention: num_heads query heads, num_kv_heads key/value heads, passed
    to attention() as they are (the backend groups them; no copies of k/v).

    decode=True keeps a KV cache (collection "cache") of cache_length slots. The first call
    (prefill, any length) creates it, writes its keys/values at slot 0 and attends within itself,
    prefix flags included; each later call writes its tokens at the next slots and attends to the
    whole cache through the "xla" backend's q_offset, whose causal mask hides the slots not yet
    written. Later tokens are never in the prefix: decoding generates targets.
    """
    config: LlamaConfig

    @nn.compact
    def __call__(self, x, positions, segment_ids, prefix=None, decode: bool = False,
                 cache_length: int | None = None):
        cfg = self.config
        dt = cfg.activation_dtype
        kv_axes = ("embed", "heads", "kv")  # kv heads shard like query heads: num_kv_heads % model == 0
        q = DenseGeneral((cfg.num_heads, cfg.head_dim), kv_axes, dtype=dt, name="query")(x)
        k = DenseGeneral((cfg.num_kv_heads, cfg.head_dim), kv_axes, dtype=dt, name="key")(x)
        v = DenseGeneral((cfg.num_kv_heads, cfg.head_dim), kv_axes, dtype=dt, name="value")(x)
        inv_freq = rope_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
        q = constrain(q, ("batch", "length", "heads", "kv"))
        k = constrain(k, ("batch", "length", "heads", "kv"))
        v = constrain(v, ("batch", "length", "heads", "kv"))
        kv_segment_ids, q_offset, impl = segment_ids, 0, cfg.attention_impl
        if decode:
            k, v, kv_segment_ids, q_offset, prefix = self._cache(k, v, segment_ids, prefix, cache_length)
            impl = "xla"  # the only backend with q_offset; decode steps are one query, nothing to fuse
        out = attention(q, k, v, q_segment_ids=segment_ids, kv_segment_ids=kv_segment_ids, causal=True,
                        prefix=prefix, sm_scale=cfg.head_dim ** -0.5, q_offset=q_offset,
                        implementation=impl, block_sizes=cfg.attention_block_sizes)
        out = constrain(out, ("batch", "length", "heads", "kv"))
        return DenseGeneral((x.shape[-1],), ("heads", "kv", "embed"), in_dims=2, dtype=dt, name="out")(out)

    def _cache(self, k, v, segment_ids, prefix, cache_length):
        """(keys, values, kv segment ids, query offset, prefix) for this call; updates the cache."""
        batch, length, kv_heads, head_dim = k.shape
        prefill = not self.has_variable("cache", "cached_key")
        if prefill and cache_length is None:
            raise ValueError("the first decode call (prefill) needs cache_length, the number of slots to keep.")
        cached_k = self.variable("cache", "cached_key", jnp.zeros, (batch, cache_length, kv_heads, head_dim), k.dtype)
        cached_v = self.variable("cache", "cached_value", jnp.zeros, (batch, cache_length, kv_heads, head_dim), v.dtype)
        # The segment ids of the cached slots: 0 for left padding of a prompt (and unwritten slots).
        cached_seg = self.variable("cache", "cached_segment_ids", jnp.zeros, (batch, cache_length), jnp.int32)
        index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
        i = index.value
        cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k, (0, i, 0, 0))
        cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v, (0, i, 0, 0))
        cached_seg.value = jax.lax.dynamic_update_slice(cached_seg.value, segment_ids.astype(jnp.int32), (0, i))
        index.value = i + length
        if prefill:
            return k, v, segment_ids, 0, prefix
        return cached_k.value, cached_v.value, cached_seg.value, i, None


class DecoderLayer(nn.Module):
    config: LlamaConfig

    @nn.compact
    def __call__(self, x, positions, segment_ids, prefix, decode=False, cache_length=None):
        cfg = self.config
        dt = cfg.activation_dtype
        y = layers.RMSNorm(cfg.norm_eps, dtype=dt, name="pre_attention_norm")(x)
        x = x + Attention(cfg, name="attention")(y, positions, segment_ids, prefix, decode, cache_length)
        y = layers.RMSNorm(cfg.norm_eps, dtype=dt, name="pre_mlp_norm")(x)
        x = x + SwiGLU(cfg.mlp_dim, dtype=dt, name="mlp")(y)
        return constrain(x, ("batch", "length", "embed"))


class Decoder(nn.Module):
    """Teacher-forced float32 logits [B, L, vocab]; or, with decode=True, one KV-cached call."""
    config: LlamaConfig

    @nn.compact
    def __call__(self, decoder_input_tokens, decoder_positions=None, decoder_segment_ids=None,
                 decoder_causal_attention=None, decode: bool = False, cache_length: int | None = None,
                 deterministic: bool = True, hidden_only: bool = False):
        """hidden_only: return the final-norm hidden states [B, L, emb] instead of the logits."""
        del deterministic  # no dropout: LLaMA trains without it
        cfg = self.config
        if cfg.vocab_size is None:
            raise ValueError("LlamaConfig.vocab_size is None; resolve it from the vocabulary first "
                             "(flan_mix.models.build.build_model does this) or bind LlamaConfig.vocab_size in gin.")
        tokens = decoder_input_tokens
        if decoder_positions is None:
            decoder_positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        if decoder_segment_ids is None:
            decoder_segment_ids = jnp.ones_like(tokens)
        prefix = decoder_causal_attention if cfg.prefix_lm else None
        dt = cfg.activation_dtype
        embed = layers.Embed(cfg.vocab_size, cfg.emb_dim, dtype=dt, init_std=0.02, name="token_embed")
        x = constrain(embed(tokens), ("batch", "length", "embed"))
        for i in range(cfg.num_layers):
            x = DecoderLayer(cfg, name=f"layer_{i}")(x, decoder_positions, decoder_segment_ids, prefix,
                                                     decode, cache_length)
        x = layers.RMSNorm(cfg.norm_eps, dtype=dt, name="final_norm")(x)
        if hidden_only:
            return x
        if cfg.tie_embeddings:
            logits = embed.attend(x)
        else:
            logits = DenseGeneral((cfg.vocab_size,), ("embed", "vocab"), dtype=dt, name="logits_dense")(x)
        return constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))
