"""Batched beam search with a GNMT length penalty, for any KV-cached decoder.

The decoder is seen only through
    step_fn(token_ids [B*K], cache) -> (log_probs [B*K, V], cache)
which feeds each of the B*K beams one token. Beam k of example b lives at row b*K + k of the
ids and of every cache leaf, so when beams are re-ranked the cache rows follow their beams.

The search keeps two sets per example (as t5x does):
  alive:    the K best unfinished prefixes by summed log-prob; they compete for the K slots;
  finished: the K best sequences that emitted EOS (or reached max_decode_len), ranked by
            logprob / brevity_penalty(length). Once finished, a sequence never changes.
Each step ranks every (alive beam, next token) extension; the top 2K always hold K that do not
end (at most K end with EOS, one per beam), so the alive set is refilled in full.
It stops at max_decode_len, or earlier once no alive beam can still enter any example's finished set.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from flan_mix.models.sampling import NEG_INF

StepFn = Callable[[jax.Array, Any], tuple[jax.Array, Any]]


def brevity_penalty(length, alpha: float):
    """GNMT's length normaliser ((5 + length) / 6) ** alpha; 1 for alpha = 0 (plain log-prob sums)."""
    return ((5.0 + length) / 6.0) ** alpha


class _State(NamedTuple):
    step: jax.Array             # tokens decoded so far, int32 scalar
    alive_seqs: jax.Array       # [B, K, 1 + T] int32; column 0 is BOS, so column `step` is the last token
    alive_log_probs: jax.Array  # [B, K] summed token log-probs, best first
    finished_seqs: jax.Array    # [B, K, 1 + T] int32; zeros after EOS
    finished_scores: jax.Array  # [B, K] length-penalised, best first; NEG_INF marks an empty slot
    cache: Any                  # the decoder's cache, leaves leading with B*K


def _gather(x, indices):
    """x [B, N, ...], indices [B, M] -> [B, M, ...]: per example, the rows named by indices."""
    return jax.vmap(lambda rows, idx: rows[idx])(x, indices)


def reorder_cache(cache, parents, batch_size: int, num_beams: int):
    """Every beam takes over its parent's cache rows (parents [B, K] index the previous beams).

    0-d leaves (a step counter such as T5's cache_index) are shared by all beams and kept as they
    are; every other leaf must lead with B*K.
    """
    def reorder(leaf):
        if leaf.ndim == 0:
            return leaf
        if leaf.shape[0] != batch_size * num_beams:
            raise ValueError(f"beam_search: a cache leaf of shape {leaf.shape} neither is a scalar nor leads "
                             f"with batch * num_beams = {batch_size * num_beams}; tile the cache per beam "
                             f"(row b * num_beams + k) before the search.")
        beams = leaf.reshape((batch_size, num_beams) + leaf.shape[1:])
        return _gather(beams, parents).reshape(leaf.shape)
    return jax.tree_util.tree_map(reorder, cache)


def _mask_padded_vocab(log_probs, valid_vocab_size: int | None):
    """Ids past the tokenizer's size are never chosen. The others are not renormalised, so a beam's
    score stays its log-likelihood under the model, the number Model.score reports."""
    if valid_vocab_size is None or valid_vocab_size >= log_probs.shape[-1]:
        return log_probs
    return jnp.where(jnp.arange(log_probs.shape[-1]) < valid_vocab_size, log_probs, NEG_INF)


def beam_search(step_fn: StepFn, cache, *, batch_size: int, num_beams: int, max_decode_len: int,
                eos_id: int, bos_id: int = 0, length_penalty: float = 0.0,
                valid_vocab_size: int | None = None) -> tuple[jax.Array, jax.Array]:
    """(ids int32 [B, K, max_decode_len], scores float32 [B, K]) of each example's K best finished
    sequences, best first. Ids include the EOS, zeros follow it; a sequence that reached
    max_decode_len without EOS counts as finished at that length. Jittable (call it under jit).
    """
    if length_penalty < 0:
        raise ValueError(f"beam_search: length_penalty must be >= 0 (the stopping rule relies on it), "
                         f"got {length_penalty}.")
    B, K, T = batch_size, num_beams, max_decode_len

    def advance(state: _State) -> _State:
        last = state.alive_seqs[:, :, state.step].reshape(B * K)
        log_probs, cache = step_fn(last, state.cache)
        log_probs = _mask_padded_vocab(log_probs.astype(jnp.float32), valid_vocab_size)
        vocab = log_probs.shape[-1]
        # Rank every (beam, token) extension of an example jointly.
        totals = (state.alive_log_probs[:, :, None] + log_probs.reshape(B, K, vocab)).reshape(B, K * vocab)
        top_log_probs, flat = jax.lax.top_k(totals, 2 * K)
        parents, tokens = flat // vocab, flat % vocab
        seqs = _gather(state.alive_seqs, parents).at[:, :, state.step + 1].set(tokens)
        length = state.step + 1
        ends = (tokens == eos_id) | (length == T)  # at the length limit every candidate finishes

        # Alive: the K best candidates that go on (ending ones are pushed to the bottom).
        alive_log_probs, keep = jax.lax.top_k(jnp.where(ends, NEG_INF, top_log_probs), K)
        cache = reorder_cache(cache, _gather(parents, keep), B, K)

        # Finished: the K best of the old finished set and the candidates that just ended.
        scores = jnp.where(ends, top_log_probs / brevity_penalty(length, length_penalty), NEG_INF)
        finished_scores, best = jax.lax.top_k(jnp.concatenate([state.finished_scores, scores], 1), K)
        finished_seqs = _gather(jnp.concatenate([state.finished_seqs, seqs], 1), best)
        return _State(length, _gather(seqs, keep), alive_log_probs, finished_seqs, finished_scores, cache)

    def keep_going(state: _State):
        # A log-prob only falls as a beam grows, and for alpha >= 0 the penalty divides it by at most
        # brevity_penalty(T), so best alive log-prob / brevity_penalty(T) bounds every score still
        # to come. Once that cannot beat an example's worst finished score, its result is final.
        best_possible = state.alive_log_probs[:, 0] / brevity_penalty(T, length_penalty)
        settled = state.finished_scores[:, -1] >= best_possible
        return (state.step < T) & ~jnp.all(settled)

    seqs = jnp.zeros((B, K, 1 + T), jnp.int32).at[:, :, 0].set(bos_id)
    # All K beams start as the same BOS prefix: only the first may extend, or each candidate would
    # appear K times.
    alive_log_probs = jnp.full((B, K), NEG_INF, jnp.float32).at[:, 0].set(0.0)
    init = _State(jnp.int32(0), seqs, alive_log_probs, seqs, jnp.full((B, K), NEG_INF, jnp.float32), cache)
    final = jax.lax.while_loop(keep_going, advance, init)
    return final.finished_seqs[:, :, 1:], final.finished_scores
