"""EncoderDecoderModel: T5 1.1 (flan_mix.models.t5) behind the Model interface.

Batches carry the features of seqio's EncDecFeatureConverter. Decoding is KV-cached: the encoder
runs once; a sizing call on the full target buffer creates the decoder's cache (and projects the
encoder keys/values once); then each step feeds one token and reads one row of logits, so a
sequence of T tokens costs O(T) decoder work. num_beams > 1 runs beam search
(flan_mix.models.beam_search) over the same cached step, with the encoder output copied per beam.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flan_mix.models import beam_search, losses, sampling
from flan_mix.models.base import Batch, DecodingConfig, Model
from flan_mix.models.t5 import T5Config, Transformer, default_segment_ids

EOS_ID = 1
PAD_ID = 0  # also T5's first decoder input (BOS)


@dataclasses.dataclass(frozen=True)
class EncoderDecoderModel(Model):
    config: T5Config
    z_loss: float = 1e-4
    loss_normalization: Any = "num_real_target_tokens"

    FEATURES = ("encoder_input_tokens", "encoder_segment_ids", "encoder_positions",
                "decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights",
                "decoder_segment_ids", "decoder_positions")

    @property
    def module(self) -> Transformer:
        return Transformer(self.config)

    def _init_inputs(self):
        one = jnp.ones((1, 1), jnp.int32)
        return {"encoder_input_tokens": one, "decoder_input_tokens": one, "decoder_target_tokens": one}

    def logits(self, params, batch: Batch, *, dropout_rng=None):
        deterministic = dropout_rng is None
        rngs = None if deterministic else {"dropout": dropout_rng}
        return self.module.apply({"params": params}, **batch, deterministic=deterministic, rngs=rngs)

    def targets_and_weights(self, batch: Batch):
        targets = batch["decoder_target_tokens"]
        segment_ids = batch.get("decoder_segment_ids")
        if segment_ids is None:
            segment_ids = (targets > 0).astype(jnp.int32)
        return targets, batch["decoder_loss_weights"], segment_ids

    def unpacked_batch(self, inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray], *,
                       inputs_length: int, targets_length: int) -> dict[str, np.ndarray]:
        def pad(rows, length):
            out = np.zeros((len(rows), length), np.int32)
            for i, row in enumerate(rows):
                row = np.asarray(row, np.int32)[:length]
                out[i, :len(row)] = row
            return out
        target_tokens = pad(targets, targets_length)
        decoder_inputs = np.concatenate([np.full((len(targets), 1), PAD_ID, np.int32), target_tokens[:, :-1]], 1)
        return {"encoder_input_tokens": pad(inputs, inputs_length), "decoder_input_tokens": decoder_inputs,
                "decoder_target_tokens": target_tokens,
                "decoder_loss_weights": (target_tokens > 0).astype(np.int32)}

    def count_tokens(self, batch: Mapping[str, np.ndarray]) -> int:
        return int(np.count_nonzero(batch["encoder_input_tokens"]) + batch["decoder_loss_weights"].sum())

    def batch_layout(self):
        return {"layout": "encoder_decoder"}

    def options_batch(self, prompts, options, *, num_options: int, inputs_length: int, targets_length: int):
        """As Model.options_batch, but the encoder input is kept once per prompt: [B, inputs_length]."""
        batch = super().options_batch(prompts, options, num_options=num_options, inputs_length=inputs_length,
                                      targets_length=targets_length)
        batch["encoder_input_tokens"] = batch["encoder_input_tokens"][::num_options]
        return batch

    def score_options(self, params, batch: Batch):
        """The encoder runs once per prompt and its output is shared by the prompt's options: for
        short options (letters, class names) that is most of the work saved, K-fold."""
        mask = batch["option_mask"]
        num_options = mask.shape[1]
        module = self.module
        enc_tokens = batch["encoder_input_tokens"]
        enc_seg = default_segment_ids(enc_tokens)
        encoded = module.apply({"params": params}, enc_tokens, enc_seg, method=module.encode)
        encoded, enc_seg = jnp.repeat(encoded, num_options, axis=0), jnp.repeat(enc_seg, num_options, axis=0)
        targets = batch["decoder_target_tokens"]
        logits = module.apply({"params": params}, encoded, enc_seg, batch["decoder_input_tokens"],
                              default_segment_ids(targets), method=module.decode)
        sums = losses.target_log_likelihoods(logits, targets, batch["decoder_loss_weights"])["sum_logprob"]
        return jnp.where(mask, sums.reshape(mask.shape), -jnp.inf)

    def mean_hidden_states(self, params, batch: Batch):
        """The encoder's output (final norm applied) averaged over each row's real tokens."""
        tokens = jnp.asarray(batch["inputs"], jnp.int32)
        seg = default_segment_ids(tokens)
        module = self.module
        encoded = module.apply({"params": params}, tokens, seg, method=module.encode).astype(jnp.float32)
        mask = seg.astype(jnp.float32)[..., None]
        return jnp.sum(encoded * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)

    def predict(self, params, batch: Batch, decoding: DecodingConfig, rng=None):
        if decoding.num_beams > 1:
            return beam_decode(self.module, params, batch["inputs"], decoding=decoding)[0][:, 0]
        rng = jax.random.PRNGKey(0) if rng is None else rng
        return _decode(self.module, params, batch["inputs"], rng, decoding=decoding)


@functools.partial(jax.jit, static_argnames=("module", "decoding"))
def _decode(module: Transformer, params, encoder_input_tokens, rng, *, decoding: DecodingConfig):
    batch, max_decode_len = encoder_input_tokens.shape[0], decoding.max_decode_len
    enc_seg = default_segment_ids(encoder_input_tokens)
    encoded = module.apply({"params": params}, encoder_input_tokens, enc_seg, method=module.encode)
    buffer = jnp.zeros((batch, max_decode_len), jnp.int32)
    _, variables = module.apply({"params": params}, encoded, enc_seg, buffer, jnp.ones_like(buffer),
                                decode=True, method=module.decode, mutable=["cache"])
    step_seg = jnp.ones((batch, 1), jnp.int32)

    def step(carry):
        i, token, outputs, done, cache, rng = carry
        logits, new_vars = module.apply({"params": params, "cache": cache}, encoded, enc_seg,
                                        token[:, None], step_seg, decode=True, method=module.decode,
                                        mutable=["cache"])
        rng, sample_rng = jax.random.split(rng)
        token = sampling.next_token(logits[:, 0], sample_rng, decoding)
        token = jnp.where(done, PAD_ID, token).astype(jnp.int32)
        outputs = outputs.at[:, i].set(token)
        done = done | (token == EOS_ID)
        return i + 1, token, outputs, done, new_vars["cache"], rng

    def keep_going(carry):
        i, _, _, done, _, _ = carry
        return (i < max_decode_len) & ~jnp.all(done)

    bos = jnp.full((batch,), PAD_ID, jnp.int32)
    init = (jnp.int32(0), bos, buffer, jnp.zeros((batch,), bool), variables["cache"], rng)
    _, _, outputs, _, _, _ = jax.lax.while_loop(keep_going, step, init)
    return outputs


@functools.partial(jax.jit, static_argnames=("module", "decoding"))
def beam_decode(module: Transformer, params, encoder_input_tokens, *, decoding: DecodingConfig):
    """(ids int32 [B, K, max_decode_len], scores [B, K]): each example's K best beams, best first
    (see beam_search.beam_search for the format and the length-penalised score)."""
    batch, beams = encoder_input_tokens.shape[0], decoding.num_beams
    enc_seg = default_segment_ids(encoder_input_tokens)
    encoded = module.apply({"params": params}, encoder_input_tokens, enc_seg, method=module.encode)
    # The encoder runs once per example; its output is copied to the example's K beams (rows b*K + k),
    # so the sizing call below builds every cache leaf, cross-attention keys included, per beam.
    encoded, enc_seg = jnp.repeat(encoded, beams, axis=0), jnp.repeat(enc_seg, beams, axis=0)
    buffer = jnp.zeros((batch * beams, decoding.max_decode_len), jnp.int32)
    _, variables = module.apply({"params": params}, encoded, enc_seg, buffer, jnp.ones_like(buffer),
                                decode=True, method=module.decode, mutable=["cache"])
    step_seg = jnp.ones((batch * beams, 1), jnp.int32)

    def step_fn(tokens, cache):
        logits, new_vars = module.apply({"params": params, "cache": cache}, encoded, enc_seg, tokens[:, None],
                                        step_seg, decode=True, method=module.decode, mutable=["cache"])
        return jax.nn.log_softmax(logits[:, 0]), new_vars["cache"]

    return beam_search.beam_search(step_fn, variables["cache"], batch_size=batch, num_beams=beams,
                                   max_decode_len=decoding.max_decode_len, eos_id=EOS_ID, bos_id=PAD_ID,
                                   length_penalty=decoding.length_penalty,
                                   valid_vocab_size=decoding.valid_vocab_size)
