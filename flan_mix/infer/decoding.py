"""Autoregressive decoding for the encoder-decoder: greedy (temperature 0) or sampling.

The encoder runs once. Each step re-runs the decoder over the fixed-size target buffer and reads
the logits at the current position; causal masking makes the positions after it irrelevant.
This costs O(T^2) decoder work per sequence but keeps one jitted program with static shapes,
which is what short Flan targets need.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from flan_mix.models.t5 import default_segment_ids

EOS_ID = 1
PAD_ID = 0


@functools.partial(jax.jit, static_argnames=("model", "max_decode_len", "temperature"))
def decode(model, params, encoder_input_tokens, rng, *, max_decode_len: int,
           temperature: float = 0.0):
    """Returns int32 [B, max_decode_len]: generated ids, EOS included, zeros after it."""
    batch = encoder_input_tokens.shape[0]
    enc_seg = default_segment_ids(encoder_input_tokens)
    encoded = model.apply({"params": params}, encoder_input_tokens, enc_seg, method=model.encode)
    dec_seg = jnp.ones((batch, max_decode_len), jnp.int32)

    def step(carry):
        i, inputs, outputs, done, rng = carry
        logits = model.apply({"params": params}, encoded, enc_seg, inputs, dec_seg, method=model.decode)
        logits_i = logits[:, i]
        rng, sample_rng = jax.random.split(rng)
        if temperature > 0.0:
            token = jax.random.categorical(sample_rng, logits_i / temperature)
        else:
            token = jnp.argmax(logits_i, axis=-1)
        token = jnp.where(done, PAD_ID, token).astype(jnp.int32)
        outputs = outputs.at[:, i].set(token)
        # The next decoder input is this token (the buffer is shifted right by one: BOS = 0).
        inputs = jax.lax.dynamic_update_slice(inputs, token[:, None], (0, jnp.minimum(i + 1, max_decode_len - 1)))
        done = done | (token == EOS_ID)
        return i + 1, inputs, outputs, done, rng

    def keep_going(carry):
        i, _, _, done, _ = carry
        return (i < max_decode_len) & ~jnp.all(done)

    zeros = jnp.zeros((batch, max_decode_len), jnp.int32)
    init = (jnp.int32(0), zeros, zeros, jnp.zeros((batch,), bool), rng)
    _, _, outputs, _, _ = jax.lax.while_loop(keep_going, step, init)
    return outputs


def strip_after_eos(ids) -> list[list[int]]:
    """Host-side: token lists cut at the first EOS (exclusive), padding removed."""
    out = []
    for row in ids.tolist():
        row = row[:row.index(EOS_ID)] if EOS_ID in row else row
        out.append([t for t in row if t != PAD_ID])
    return out
