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


def rank_options(model: Model, params, prompts: Sequence[np.ndarray], options: Sequence[Sequence[np.ndarray]],
                 **kwargs) -> list[dict]:
    """For each prompt, {"choice": index of the most likely option, "logprobs": [per option]}.

    kwargs as score_pairs (mesh, inputs_length, targets_length, batch_size, desc).
    """
    flat_inputs, flat_targets, owner = [], [], []
    for i, (prompt, opts) in enumerate(zip(prompts, options, strict=True)):
        if not len(opts):
            raise ValueError(f"rank_options: example {i} has no options.")
        for opt in opts:
            flat_inputs.append(prompt)
            flat_targets.append(opt)
            owner.append(i)
    sums = score_pairs(model, params, flat_inputs, flat_targets, **kwargs)["sum_logprob"]
    results = [{"logprobs": []} for _ in prompts]
    for i, value in zip(owner, sums):
        results[i]["logprobs"].append(float(value))
    for r in results:
        r["choice"] = int(np.argmax(r["logprobs"]))
    return results
