"""Choosing the next token from a row of logits: greedy, or temperature sampling with top-k/top-p.

Model-agnostic: every family's decode loop calls next_token().
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from flan_mix.models.base import DecodingConfig

NEG_INF = -1e30


def mask_padded_vocab(logits, valid_vocab_size: int | None):
    """Ids past the tokenizer's size (the embedding is padded to a multiple of 128) are never chosen."""
    if valid_vocab_size is None or valid_vocab_size >= logits.shape[-1]:
        return logits
    ids = jnp.arange(logits.shape[-1])
    return jnp.where(ids < valid_vocab_size, logits, NEG_INF)


def _top_k(logits, k: int):
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth, NEG_INF, logits)


def _top_p(logits, p: float):
    """Keeps the smallest set of most likely tokens whose probability reaches p (always the top one)."""
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass of the tokens ranked above each one
    keep_sorted = before < p
    keep = jnp.zeros_like(keep_sorted).at[
        jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
    return jnp.where(keep, logits, NEG_INF)


def next_token(logits, rng, decoding: DecodingConfig):
    """int32 [B]: the next ids for float logits [B, vocab]."""
    logits = mask_padded_vocab(logits, decoding.valid_vocab_size)
    if decoding.temperature <= 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / decoding.temperature
    if decoding.top_k:
        logits = _top_k(logits, decoding.top_k)
    if decoding.top_p < 1.0:
        logits = _top_p(logits, decoding.top_p)
    return jax.random.categorical(rng, logits).astype(jnp.int32)
