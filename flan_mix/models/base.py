"""The one model interface: what a trainer, a decoder, an evaluator and a curation pipeline use.

A Model owns its Flax module and config, names the batch features it consumes, and provides
  loss(params, batch, ...)     the training objective's un-normalised sum and its statistics;
  score(params, batch)         per-example target log-likelihoods (rank classification, IFD);
  predict(params, batch, ...)  decoded token ids.
Callers never look inside: the same code serves the encoder-decoder and decoder-only families.
Every method is a pure function of (params, batch), so callers jit it with the model static
(models are frozen dataclasses, hence hashable).
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flan_mix.models import losses

Batch = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class DecodingConfig:
    """How predict() decodes: greedy at temperature 0, else sampling at that temperature, from the
    top_k most likely tokens (0: all) and the top_p probability mass (1.0: all).

    valid_vocab_size: the tokenizer's size; ids past it (embedding padding) are never generated.
    num_beams > 1: beam search instead (deterministic, so no sampling settings), ranking finished
      beams by logprob / ((5 + length) / 6) ** length_penalty (GNMT's alpha; 0: the plain sum).
    """
    max_decode_len: int
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    valid_vocab_size: int | None = None
    num_beams: int = 1
    length_penalty: float = 0.0

    def __post_init__(self):
        if self.max_decode_len < 1:
            raise ValueError(f"DecodingConfig.max_decode_len must be >= 1, got {self.max_decode_len}.")
        if self.temperature < 0 or self.top_k < 0 or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"DecodingConfig: need temperature >= 0, top_k >= 0 and 0 < top_p <= 1; got "
                             f"{self.temperature}, {self.top_k}, {self.top_p}.")
        if self.num_beams < 1 or self.length_penalty < 0:
            raise ValueError(f"DecodingConfig: need num_beams >= 1 and length_penalty >= 0; got "
                             f"{self.num_beams}, {self.length_penalty}.")
        if self.num_beams > 1 and (self.temperature > 0 or self.top_k or self.top_p < 1.0):
            raise ValueError(f"DecodingConfig: beam search (num_beams={self.num_beams}) does not sample; "
                             f"set temperature=0, top_k=0 and top_p=1.0, or num_beams=1 to sample.")


class Model(abc.ABC):
    """Subclasses are frozen dataclasses with a `config` and the loss settings below."""
    config: Any
    z_loss: float
    loss_normalization: Any

    # The features of a training batch this model reads (others are dropped before the step).
    FEATURES: tuple[str, ...] = ()

    @property
    @abc.abstractmethod
    def module(self) -> nn.Module:
        """The Flax module."""

    @abc.abstractmethod
    def _init_inputs(self) -> dict[str, jax.Array]:
        """The smallest batch that creates every parameter (parameter shapes never depend on it)."""

    @abc.abstractmethod
    def logits(self, params, batch: Batch, *, dropout_rng=None) -> jax.Array:
        """Teacher-forced float32 logits [B, T, vocab] over the target positions."""

    @abc.abstractmethod
    def targets_and_weights(self, batch: Batch) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(target ids, loss weights, segment ids) aligned with logits()."""

    @abc.abstractmethod
    def predict(self, params, batch: Batch, decoding: DecodingConfig, rng=None) -> jax.Array:
        """int32 [B, max_decode_len] generated ids, EOS included, zeros after it, for the prompts
        batch["inputs"] (int32 [B, L] input ids, right-padded with 0): the same for every family."""

    @abc.abstractmethod
    def unpacked_batch(self, inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray], *,
                       inputs_length: int, targets_length: int) -> dict[str, np.ndarray]:
        """One (input ids, target ids) pair per row, as this model's features (for score())."""

    @abc.abstractmethod
    def count_tokens(self, batch: Mapping[str, np.ndarray]) -> int:
        """Host-side count of the non-padding tokens a batch feeds the model (for tokens/s)."""

    @abc.abstractmethod
    def batch_layout(self) -> dict[str, Any]:
        """How the data side lays out this model's training rows: the keyword arguments `layout`
        (and `bos_id`) of flan_mix.data.pipeline.get_batches. Plain values, so models stay data-free."""

    # ----- parameters -----
    def init_variables(self, rng) -> dict:
        """Boxed variables (with logical axis metadata), deterministic in rng."""
        return self.module.init(rng, **self._init_inputs(), deterministic=True)

    def abstract_params(self):
        """Boxed ShapeDtypeStruct params: shapes and logical axes, nothing allocated."""
        return jax.eval_shape(self.init_variables, jax.random.PRNGKey(0))["params"]

    def init_params(self, rng):
        return nn.meta.unbox(self.init_variables(rng)["params"])

    # ----- loss and scores -----
    def loss_weights(self, batch: Batch):
        """(token weights, denominator) under self.loss_normalization; independent of params."""
        _, weights, segment_ids = self.targets_and_weights(batch)
        return losses.loss_weights_and_denominator(weights, segment_ids, self.loss_normalization)

    def loss(self, params, batch: Batch, *, weights=None, dropout_rng=None):
        """(sum over tokens of (cross entropy + z-loss) * weights, statistics named LOSS_STATS).

        weights default to self.loss_weights(batch)[0]; the caller divides by the denominator.
        """
        if weights is None:
            weights = self.loss_weights(batch)[0]
        logits = self.logits(params, batch, dropout_rng=dropout_rng)
        targets, raw, _ = self.targets_and_weights(batch)
        ce, zl = losses.token_losses(logits, targets, self.z_loss)
        raw = raw.astype(jnp.float32)
        correct = (jnp.argmax(logits, -1) == targets) * raw
        objective = jnp.sum((ce + zl) * weights)
        stats = {"ce_sum": jnp.sum(ce * raw), "z_loss_sum": jnp.sum(zl * raw),
                 "correct": jnp.sum(correct), "target_tokens": jnp.sum(raw)}
        return objective, stats

    def score(self, params, batch: Batch) -> dict[str, jax.Array]:
        """Per example (one per row, unpacked): sum_logprob, mean_logprob and num_tokens of the
        targets under teacher forcing."""
        targets, weights, _ = self.targets_and_weights(batch)
        return losses.target_log_likelihoods(self.logits(params, batch), targets, weights)

    def mean_hidden_states(self, params, batch: Batch) -> jax.Array:
        """float32 [B, emb]: the mean over each row's tokens of the model's last hidden states (after the
        final norm) reading batch["inputs"] (int32 [B, L] input ids, right-padded with 0): a text
        embedding, e.g. for clustering instructions (IFD's pre-experience)."""
        raise NotImplementedError(f"{type(self).__name__} does not provide mean_hidden_states.")

    # ----- multiple choice (rank classification) -----
    def options_batch(self, prompts: Sequence[np.ndarray], options: Sequence[Sequence[np.ndarray]], *,
                      num_options: int, inputs_length: int, targets_length: int) -> dict[str, np.ndarray]:
        """Features for score_options(): one (prompt, option) row per option slot, prompt-major, plus
        option_mask [B, num_options] (False for the slots past a prompt's own options)."""
        empty = np.zeros(1, np.int32)
        mask = np.zeros((len(prompts), num_options), bool)
        flat_inputs, flat_targets = [], []
        for b, (prompt, opts) in enumerate(zip(prompts, options, strict=True)):
            if len(opts) > num_options:
                raise ValueError(f"options_batch: prompt {b} has {len(opts)} options, more than num_options="
                                 f"{num_options}.")
            mask[b, :len(opts)] = True
            flat_inputs += [prompt] * num_options
            flat_targets += list(opts) + [empty] * (num_options - len(opts))
        batch = self.unpacked_batch(flat_inputs, flat_targets, inputs_length=inputs_length,
                                    targets_length=targets_length)
        batch["option_mask"] = mask
        return batch

    def score_options(self, params, batch: Batch) -> jax.Array:
        """sum_logprob [B, num_options] of each option given its prompt; empty slots get -inf.

        This default scores every (prompt, option) row in full; a model that can share the prompt's
        work across options (an encoder) overrides it."""
        mask = batch["option_mask"]
        rows = {k: v for k, v in batch.items() if k != "option_mask"}
        sums = self.score(params, rows)["sum_logprob"].reshape(mask.shape)
        return jnp.where(mask, sums, -jnp.inf)
