"""Batched scoring through Model.score: target log-likelihoods and rank classification.

Rank classification (how Flan and T0 score multiple choice): each option is scored as the target
given the prompt, and the option with the highest log-likelihood (its sum over tokens, EOS
included) is the answer.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from flan_mix.models.base import Model
from flan_mix.runtime import partitioning


@functools.partial(jax.jit, static_argnames=("model",))
def _score(model: Model, params, batch):
    return model.score(params, batch)


def score_pairs(model: Model, params, inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray], *,
                mesh: Mesh, inputs_length: int, targets_length: int, batch_size: int,
                desc: str = "score") -> dict[str, np.ndarray]:
    """sum_logprob, mean_logprob and num_tokens of each target given its input (numpy, one per pair).

    Batches are padded to batch_size so one compiled program serves them all.
    """
    if len(inputs) != len(targets):
        raise ValueError(f"score_pairs: {len(inputs)} inputs for {len(targets)} targets.")
    empty = np.zeros(1, np.int32)
    parts: dict[str, list[np.ndarray]] = {}
    for start in tqdm(range(0, len(inputs), batch_size), desc=desc, unit="batch", leave=False):
        n = min(batch_size, len(inputs) - start)
        fill = [empty] * (batch_size - n)
        batch = model.unpacked_batch(list(inputs[start:start + n]) + fill, list(targets[start:start + n]) + fill,
                                     inputs_length=inputs_length, targets_length=targets_length)
        with mesh:
            batch = jax.device_put(batch, partitioning.replicated(mesh))
            scores = jax.device_get(_score(model, params, batch))
        for key, value in scores.items():
            parts.setdefault(key, []).append(np.asarray(value)[:n])
    return {k: np.concatenate(v) for k, v in parts.items()}


@functools.partial(jax.jit, static_argnames=("model",))
def _score_options(model: Model, params, batch):
    return model.score_options(params, batch)


def rank_options(model: Model, params, prompts: Sequence[np.ndarray], options: Sequence[Sequence[np.ndarray]], *,
                 mesh: Mesh, inputs_length: int, targets_length: int, batch_size: int,
                 desc: str = "rank") -> list[dict]:
    """For each prompt, {"choice": index of the most likely option, "logprobs": [per option]}.

    batch_size counts prompts; each batch carries all of its prompts' options (Model.score_options,
    which lets an encoder-decoder encode each prompt once). Every batch is padded to batch_size
    prompts and to the largest option count of the call, so one compiled program serves them all.
    """
    if len(prompts) != len(options):
        raise ValueError(f"rank_options: {len(prompts)} prompts for {len(options)} option lists.")
    for i, opts in enumerate(options):
        if not len(opts):
            raise ValueError(f"rank_options: example {i} has no options.")
    num_options = max((len(o) for o in options), default=0)
    empty = np.zeros(1, np.int32)
    results = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, unit="batch", leave=False):
        n = min(batch_size, len(prompts) - start)
        batch = model.options_batch(list(prompts[start:start + n]) + [empty] * (batch_size - n),
                                    list(options[start:start + n]) + [[]] * (batch_size - n),
                                    num_options=num_options, inputs_length=inputs_length,
                                    targets_length=targets_length)
        with mesh:
            batch = jax.device_put(batch, partitioning.replicated(mesh))
            logprobs = np.asarray(jax.device_get(_score_options(model, params, batch)))
        for row, opts in zip(logprobs[:n], options[start:start + n]):
            kept = [float(v) for v in row[:len(opts)]]
            results.append({"logprobs": kept, "choice": int(np.argmax(kept))})
    return results
