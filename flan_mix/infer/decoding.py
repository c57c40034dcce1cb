"""Autoregressive decoding for the encoder-decoder: greedy (temperature 0) or sampling.

The encoder runs once. A sizing call on the full target buffer creates the decoder's KV cache
(and projects the encoder keys/values once); then each step feeds one token and reads one row
of logits, so a sequence of T tokens costs O(T) decoder work.
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
    buffer = jnp.zeros((batch, max_decode_len), jnp.int32)
    _, variables = model.apply({"params": params}, encoded, enc_seg, buffer, jnp.ones_like(buffer),
                               decode=True, method=model.decode, mutable=["cache"])
    step_seg = jnp.ones((batch, 1), jnp.int32)

    def step(carry):
        i, token, outputs, done, cache, rng = carry
        logits, new_vars = model.apply({"params": params, "cache": cache}, encoded, enc_seg,
                                       token[:, None], step_seg, decode=True, method=model.decode,
                                       mutable=["cache"])
        logits = logits[:, 0]
        rng, sample_rng = jax.random.split(rng)
        if temperature > 0.0:
            token = jax.random.categorical(sample_rng, logits / temperature)
        else:
            token = jnp.argmax(logits, axis=-1)
        token = jnp.where(done, PAD_ID, token).astype(jnp.int32)
        outputs = outputs.at[:, i].set(token)
        done = done | (token == EOS_ID)
        return i + 1, token, outputs, done, new_vars["cache"], rng

    def keep_going(carry):
        i, _, _, done, _, _ = carry
        return (i < max_decode_len) & ~jnp.all(done)

    bos = jnp.zeros((batch,), jnp.int32)  # T5 starts decoding from id 0
    init = (jnp.int32(0), bos, buffer, jnp.zeros((batch,), bool), variables["cache"], rng)
    _, _, outputs, _, _, _ = jax.lax.while_loop(keep_going, step, init)
    return outputs


def strip_after_eos(ids) -> list[list[int]]:
    """Host-side: token lists cut at the first EOS (exclusive), padding removed."""
    out = []
    for row in ids.tolist():
        row = row[:row.index(EOS_ID)] if EOS_ID in row else row
        out.append([t for t in row if t != PAD_ID])
    return out
