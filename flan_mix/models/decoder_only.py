"""DecoderOnlyModel: a LLaMA-style decoder (flan_mix.models.llama) behind the Model interface.

Batches carry seqio's decoder features (flan_mix.data's decoder packer writes them): one sequence
per example, inputs ++ targets, with the loss on the targets only:
    decoder_target_tokens     x1 .. xn y1 .. ym 0 ..
    decoder_input_tokens      BOS x1 .. xn y1 .. y(m-1) 0 ..   (shifted right; BOS = config.bos_id)
    decoder_loss_weights      0 .. 0 1 .. 1 0 ..               (on y1 .. ym)
    decoder_causal_attention  1 on the first n + 1 positions   (seqio.PrefixLMFeatureConverter)
    decoder_segment_ids, decoder_positions                     (packed rows)
LlamaConfig.prefix_lm picks the mode: plain causal LM (decoder_causal_attention ignored), or
prefix-LM (it is passed to attention() as prefix=).

Decoding (predict) is KV-cached. The prompt of a row is BOS followed by its input ids. Prompts of
different lengths are left-padded so that they all end at the same column: then every row writes
its next token into the same cache slot at each step, so one dynamic_update_slice and one scalar
q_offset serve the whole batch, and the "xla" backend's causal mask needs no per-row offsets.
Positions are counted from each row's first real token (RoPE sees the prompt as if unpadded) and
the padding is segment 0, which attention() masks. The prompt is prefilled in one call (in
prefix-LM mode bidirectionally), then each step feeds one token.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flan_mix.models import beam_search, sampling
from flan_mix.models.base import Batch, DecodingConfig, Model
from flan_mix.models.llama import Decoder, LlamaConfig

PAD_ID = 0

_LM_FEATURES = ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights",
                "decoder_segment_ids", "decoder_positions")


@dataclasses.dataclass(frozen=True)
class DecoderOnlyModel(Model):
    config: LlamaConfig
    z_loss: float = 1e-4
    loss_normalization: Any = "num_real_target_tokens"

    @property
    def FEATURES(self) -> tuple[str, ...]:  # noqa: N802 (the Model interface's name)
        return _LM_FEATURES + (("decoder_causal_attention",) if self.config.prefix_lm else ())

    @property
    def module(self) -> Decoder:
        return Decoder(self.config)

    def _init_inputs(self):
        return {"decoder_input_tokens": jnp.ones((1, 1), jnp.int32)}

    def logits(self, params, batch: Batch, *, dropout_rng=None):
        del dropout_rng  # no dropout
        prefix = None
        if self.config.prefix_lm:
            if "decoder_causal_attention" not in batch:
                raise ValueError("LlamaConfig.prefix_lm=True needs the decoder_causal_attention feature "
                                 "(seqio.PrefixLMFeatureConverter's; flan_mix.data's 'prefix_lm' layout).")
            prefix = batch["decoder_causal_attention"]
        return self.module.apply({"params": params}, batch["decoder_input_tokens"], batch.get("decoder_positions"),
                                 self.targets_and_weights(batch)[2], prefix)

    def targets_and_weights(self, batch: Batch):
        targets = batch["decoder_target_tokens"]
        segment_ids = batch.get("decoder_segment_ids")
        if segment_ids is None:
            # Unpacked rows: the inputs start with BOS (possibly 0), so padding comes from the targets.
            segment_ids = (targets != PAD_ID).astype(jnp.int32)
        return targets, batch["decoder_loss_weights"], segment_ids

    def unpacked_batch(self, inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray], *,
                       inputs_length: int, targets_length: int) -> dict[str, np.ndarray]:
        """One (inputs ++ targets) row per pair, inputs_length + targets_length long: seqio's
        PrefixLMFeatureConverter layout without packing. Trailing zeros of a pair are padding."""
        length = inputs_length + targets_length
        out = {k: np.zeros((len(inputs), length), np.int32)
               for k in ("decoder_target_tokens", "decoder_input_tokens", "decoder_loss_weights",
                         "decoder_causal_attention")}
        for i, (inp, tgt) in enumerate(zip(inputs, targets, strict=True)):
            inp = np.trim_zeros(np.asarray(inp, np.int32)[:inputs_length], "b")
            tgt = np.trim_zeros(np.asarray(tgt, np.int32)[:targets_length], "b")
            n, total = len(inp), len(inp) + len(tgt)
            out["decoder_target_tokens"][i, :total] = np.concatenate([inp, tgt])
            out["decoder_input_tokens"][i, :total] = np.concatenate([[self.config.bos_id], inp, tgt])[:total]
            out["decoder_loss_weights"][i, n:total] = 1
            out["decoder_causal_attention"][i, :min(n + 1, total)] = 1
        return out

    def count_tokens(self, batch: Mapping[str, np.ndarray]) -> int:
        if "decoder_segment_ids" in batch:
            return int(np.count_nonzero(batch["decoder_segment_ids"]))
        return int(np.count_nonzero(batch["decoder_target_tokens"]))

    def batch_layout(self):
        # Inputs and targets in one row, loss on the targets; an LM ignores decoder_causal_attention.
        return {"layout": "prefix_lm", "bos_id": self.config.bos_id}

    def mean_hidden_states(self, params, batch: Batch):
        """The final-norm hidden states of BOS + the input ids, averaged over the real positions (BOS
        included, padding left out; causal attention keeps the trailing padding from the real rows)."""
        prompts = jnp.asarray(batch["inputs"], jnp.int32)
        tokens = jnp.concatenate([jnp.full((prompts.shape[0], 1), self.config.bos_id, jnp.int32), prompts], 1)
        seg = jnp.concatenate([jnp.ones((prompts.shape[0], 1), jnp.int32), (prompts != PAD_ID).astype(jnp.int32)], 1)
        prefix = seg if self.config.prefix_lm else None  # a prefix-LM reads an instruction bidirectionally
        hidden = self.module.apply({"params": params}, tokens, None, seg, prefix, hidden_only=True)
        mask = seg.astype(jnp.float32)[..., None]
        return jnp.sum(hidden.astype(jnp.float32) * mask, axis=1) / jnp.sum(mask, axis=1)

    def predict(self, params, batch: Batch, decoding: DecodingConfig, rng=None):
        """Generated ids int32 [B, max_decode_len], EOS included, zeros after it.

        The prompts are batch["inputs"]: int32 [B, L] input ids, right-padded with 0 (no BOS; it
        is added here).
        """
        prompts = jnp.asarray(batch["inputs"], jnp.int32)
        if decoding.num_beams > 1:
            return beam_decode(self.module, params, prompts, decoding=decoding)[0][:, 0]
        rng = jax.random.PRNGKey(0) if rng is None else rng
        return _decode(self.module, params, prompts, rng, decoding=decoding)


def left_aligned_prompts(prompts, bos_id: int):
    """Right-padded input ids [B, L] -> (tokens, positions, segment ids), each [B, L + 1]: BOS and
    the ids of each row moved to the right end, positions from 0 at the row's BOS, padding segment 0."""
    lengths = jnp.sum(prompts != PAD_ID, axis=1) + 1  # with BOS
    rows = jnp.concatenate([jnp.full((prompts.shape[0], 1), bos_id, jnp.int32), prompts], axis=1)
    width = rows.shape[1]
    source = jnp.arange(width)[None, :] - (width - lengths)[:, None]  # column each slot copies
    real = source >= 0
    tokens = jnp.where(real, jnp.take_along_axis(rows, jnp.maximum(source, 0), axis=1), PAD_ID)
    return tokens, jnp.where(real, source, 0), real.astype(jnp.int32)


def _prefill(module: Decoder, params, prompts, cache_length: int):
    """Runs the prompts through the decoder, filling a fresh KV cache of cache_length slots.
    Returns (logits after each row's last prompt token [B, V], cache, prompt lengths with BOS [B])."""
    tokens, positions, segment_ids = left_aligned_prompts(prompts, module.config.bos_id)
    prefix = segment_ids if module.config.prefix_lm else None  # the whole prompt is the prefix
    logits, variables = module.apply({"params": params}, tokens, positions, segment_ids, prefix, decode=True,
                                     cache_length=cache_length, mutable=["cache"])
    return logits[:, -1], variables["cache"], jnp.sum(segment_ids, axis=1)


def _step(module: Decoder, params, cache, tokens, positions):
    """One cached step: tokens [B] at positions [B] -> (logits [B, V], cache)."""
    logits, variables = module.apply({"params": params, "cache": cache}, tokens[:, None], positions[:, None],
                                     jnp.ones_like(tokens)[:, None], None, decode=True, mutable=["cache"])
    return logits[:, 0], variables["cache"]


@functools.partial(jax.jit, static_argnames=("module", "decoding"))
def _decode(module: Decoder, params, prompts, rng, *, decoding: DecodingConfig):
    batch, max_decode_len, eos_id = prompts.shape[0], decoding.max_decode_len, module.config.eos_id
    # Slots: the prompt (+ BOS) and every generated token but the last, which is never fed back.
    last_logits, cache, lengths = _prefill(module, params, prompts, prompts.shape[1] + max_decode_len)
    rng, first_rng = jax.random.split(rng)
    first = sampling.next_token(last_logits, first_rng, decoding)
    outputs = jnp.zeros((batch, max_decode_len), jnp.int32).at[:, 0].set(first)

    def step(carry):
        i, token, outputs, done, cache, rng = carry
        # Token i - 1 of the output sits at position length + i - 1 of its sequence.
        logits, cache = _step(module, params, cache, token, lengths + i - 1)
        rng, sample_rng = jax.random.split(rng)
        token = sampling.next_token(logits, sample_rng, decoding)
        token = jnp.where(done, PAD_ID, token).astype(jnp.int32)
        outputs = outputs.at[:, i].set(token)
        return i + 1, token, outputs, done | (token == eos_id), cache, rng

    def keep_going(carry):
        i, _, _, done, _, _ = carry
        return (i < max_decode_len) & ~jnp.all(done)

    init = (jnp.int32(1), first, outputs, first == eos_id, cache, rng)
    return jax.lax.while_loop(keep_going, step, init)[2]


@functools.partial(jax.jit, static_argnames=("module", "decoding"))
def beam_decode(module: Decoder, params, prompts, *, decoding: DecodingConfig):
    """(ids int32 [B, K, max_decode_len], scores [B, K]): each example's K best beams, best first
    (flan_mix.models.beam_search). The prompt is prefilled once per example and its cache copied
    to the example's K beams (rows b*K + k)."""
    batch, beams = prompts.shape[0], decoding.num_beams
    last_logits, cache, lengths = _prefill(module, params, prompts, prompts.shape[1] + decoding.max_decode_len)
    per_beam = lambda x: x if x.ndim == 0 else jnp.repeat(x, beams, axis=0)  # 0-d: the shared cache index
    state = {"model": jax.tree_util.tree_map(per_beam, cache),
             "first": per_beam(jax.nn.log_softmax(last_logits)), "step": jnp.int32(0)}
    lengths = per_beam(lengths)

    def step_fn(tokens, state):
        # beam_search feeds BOS first and wants the log-probs of the first token back: the prefill
        # already computed them. From then on it feeds each beam's last token.
        def first(_):
            return state["first"], state["model"]

        def later(_):
            logits, cache = _step(module, params, state["model"], tokens, lengths + state["step"] - 1)
            return jax.nn.log_softmax(logits), cache

        log_probs, cache = jax.lax.cond(state["step"] == 0, first, later, None)
        return log_probs, {"model": cache, "first": state["first"], "step": state["step"] + 1}

    return beam_search.beam_search(step_fn, state, batch_size=batch, num_beams=beams,
                                   max_decode_len=decoding.max_decode_len, eos_id=module.config.eos_id,
                                   bos_id=module.config.bos_id, length_penalty=decoding.length_penalty,
                                   valid_vocab_size=decoding.valid_vocab_size)
