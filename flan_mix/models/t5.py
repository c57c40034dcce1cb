"""T5 1.1 / Flan-T5 encoder-decoder in Flax Linen, readable top to bottom.

Pre-norm residual blocks with RMSNorm, GeGLU feed-forward, no biases, untied input embedding
and output logits, one bucketed relative-position bias table per stack shared by its layers.
Inputs are the features of seqio's EncDecFeatureConverter (packed or not).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import gin
import jax.numpy as jnp

from flan_mix.models import layers
from flan_mix.models.layers import constrain


@gin.configurable
@dataclasses.dataclass(frozen=True)
class T5Config:
    vocab_size: int | None = None  # None: the task vocabulary's size, padded to a multiple of 128
    emb_dim: int = 512
    num_heads: int = 6
    head_dim: int = 64
    mlp_dim: int = 1024
    num_encoder_layers: int = 8
    num_decoder_layers: int = 8
    dropout_rate: float = 0.0
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dtype: str = "float32"  # activation dtype; parameters stay float32
    attention_impl: str = "xla"  # gin: ATTENTION_IMPL, bound in gin/hardware/*.gin
    attention_block_sizes: Any = None  # kernels.flash_attention.BlockSizes; None: per-backend default

    @property
    def activation_dtype(self) -> Any:
        return jnp.dtype(self.dtype)


def default_segment_ids(tokens):
    """Unpacked rows: one segment per row, padding (id 0) is segment 0."""
    return (tokens != 0).astype(jnp.int32)


class EncoderLayer(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x, segment_ids, bias_table, deterministic):
        cfg = self.config
        dt = cfg.activation_dtype
        y = layers.RMSNorm(dtype=dt, name="pre_attention_norm")(x)
        y = layers.MultiHeadAttention(cfg.num_heads, cfg.head_dim, dtype=dt, implementation=cfg.attention_impl,
                                      block_sizes=cfg.attention_block_sizes, name="attention")(
            y, y, q_segment_ids=segment_ids, kv_segment_ids=segment_ids, causal=False,
            bias_table=bias_table, bidirectional=True,
            max_distance=cfg.relative_attention_max_distance)
        x = x + nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(y, deterministic=deterministic)
        y = layers.RMSNorm(dtype=dt, name="pre_mlp_norm")(x)
        y = layers.GatedMLP(cfg.mlp_dim, cfg.dropout_rate, dtype=dt, name="mlp")(y, deterministic)
        x = x + nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(y, deterministic=deterministic)
        return constrain(x, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x, encoded, decoder_segment_ids, encoder_segment_ids, bias_table, deterministic,
                 decode=False):
        cfg = self.config
        dt = cfg.activation_dtype
        drop = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))
        y = layers.RMSNorm(dtype=dt, name="pre_self_attention_norm")(x)
        y = layers.MultiHeadAttention(cfg.num_heads, cfg.head_dim, dtype=dt, implementation=cfg.attention_impl,
                                      block_sizes=cfg.attention_block_sizes, name="self_attention")(
            y, y, q_segment_ids=decoder_segment_ids, kv_segment_ids=decoder_segment_ids, causal=True,
            bias_table=bias_table, bidirectional=False,
            max_distance=cfg.relative_attention_max_distance, decode=decode)
        x = x + drop(y, deterministic=deterministic)
        y = layers.RMSNorm(dtype=dt, name="pre_cross_attention_norm")(x)
        y = layers.MultiHeadAttention(cfg.num_heads, cfg.head_dim, dtype=dt, implementation=cfg.attention_impl,
                                      block_sizes=cfg.attention_block_sizes, name="encoder_decoder_attention")(
            y, encoded, q_segment_ids=decoder_segment_ids, kv_segment_ids=encoder_segment_ids,
            causal=False, decode=decode)
        x = x + drop(y, deterministic=deterministic)
        y = layers.RMSNorm(dtype=dt, name="pre_mlp_norm")(x)
        y = layers.GatedMLP(cfg.mlp_dim, cfg.dropout_rate, dtype=dt, name="mlp")(y, deterministic)
        x = x + drop(y, deterministic=deterministic)
        return constrain(x, ("batch", "length", "embed"))


class Encoder(nn.Module):
    config: T5Config
    embed: nn.Module

    @nn.compact
    def __call__(self, tokens, segment_ids, deterministic):
        cfg = self.config
        bias_table = layers.RelativePositionBias(cfg.relative_attention_num_buckets, cfg.num_heads,
                                                 name="relpos_bias")()
        x = self.embed(tokens)
        x = constrain(x, ("batch", "length", "embed"))
        x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)
        for i in range(cfg.num_encoder_layers):
            x = EncoderLayer(cfg, name=f"layer_{i}")(x, segment_ids, bias_table, deterministic)
        x = layers.RMSNorm(dtype=cfg.activation_dtype, name="final_norm")(x)
        return nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)


class Decoder(nn.Module):
    config: T5Config
    embed: nn.Module

    @nn.compact
    def __call__(self, encoded, decoder_input_tokens, decoder_segment_ids, encoder_segment_ids,
                 deterministic, decode=False):
        cfg = self.config
        bias_table = layers.RelativePositionBias(cfg.relative_attention_num_buckets, cfg.num_heads,
                                                 name="relpos_bias")()
        x = self.embed(decoder_input_tokens)
        x = constrain(x, ("batch", "length", "embed"))
        x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)
        for i in range(cfg.num_decoder_layers):
            x = DecoderLayer(cfg, name=f"layer_{i}")(x, encoded, decoder_segment_ids, encoder_segment_ids,
                                                     bias_table, deterministic, decode)
        x = layers.RMSNorm(dtype=cfg.activation_dtype, name="final_norm")(x)
        x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)
        # T5 1.1 unties the output layer from the input embedding.
        logits = layers.DenseGeneral((cfg.vocab_size,), ("embed", "vocab"), dtype=cfg.activation_dtype,
                                     name="logits_dense")(x)
        return constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))


class Transformer(nn.Module):
    """Encoder-decoder; call with the EncDecFeatureConverter features, or use encode/decode."""
    config: T5Config

    def setup(self):
        cfg = self.config
        if cfg.vocab_size is None:
            raise ValueError("T5Config.vocab_size is None; resolve it from the vocabulary first "
                             "(flan_mix.models.build.build_model does this) or bind T5Config.vocab_size in gin.")
        self.token_embed = layers.Embed(cfg.vocab_size, cfg.emb_dim, dtype=cfg.activation_dtype)
        self.encoder = Encoder(cfg, self.token_embed)
        self.decoder = Decoder(cfg, self.token_embed)

    def encode(self, encoder_input_tokens, encoder_segment_ids=None, deterministic=True):
        if encoder_segment_ids is None:
            encoder_segment_ids = default_segment_ids(encoder_input_tokens)
        return self.encoder(encoder_input_tokens, encoder_segment_ids, deterministic)

    def decode(self, encoded, encoder_segment_ids, decoder_input_tokens, decoder_segment_ids,
               deterministic=True, decode=False):
        """Teacher-forced logits, or with decode=True one cached step (see MultiHeadAttention)."""
        return self.decoder(encoded, decoder_input_tokens, decoder_segment_ids, encoder_segment_ids,
                            deterministic, decode)

    def __call__(self, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
                 encoder_segment_ids=None, decoder_segment_ids=None, deterministic=True, **unused):
        """Teacher-forced logits [B, T, vocab] in float32. Extra converter features are ignored."""
        del unused
        if encoder_segment_ids is None:
            encoder_segment_ids = default_segment_ids(encoder_input_tokens)
        if decoder_segment_ids is None:
            # decoder inputs start with id 0 (BOS == pad in T5), so padding comes from the targets.
            decoder_segment_ids = default_segment_ids(decoder_target_tokens)
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids, deterministic)
        return self.decode(encoded, encoder_segment_ids, decoder_input_tokens, decoder_segment_ids,
                           deterministic)
