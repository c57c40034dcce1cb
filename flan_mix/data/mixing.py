"""Mixing rates and seqio Mixtures: capped examples-proportional mixing, as in Flan.

A task's rate is ``min(num_examples, cap) / sum over tasks of min(num_examples, cap)``: big tasks stop
dominating once they pass the cap. The helpers here are generic (plain dicts of names to numbers), so every
collection uses them; the Flan 2022 submixtures need them all: per-submixture caps, template-type weights within
a task, and nested mixtures whose submixtures have their own total weight.

Rates returned by these helpers are normalized to sum to 1.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import seqio



def normalize(rates: Mapping[str, float]) -> dict[str, float]:
    """Rates scaled to sum to 1. Raises on negative rates or an all-zero mixture."""
    for name, r in rates.items():
        if r < 0:
            raise ValueError(f"Mixing rate of '{name}' is negative ({r}).")
    total = float(sum(rates.values()))
    if total <= 0:
        raise ValueError(f"Mixing rates sum to {total}; at least one task needs a positive rate: {dict(rates)}.")
    return {name: float(r) / total for name, r in rates.items()}


def capped_rates(num_examples: Mapping[str, int], cap: int | None) -> dict[str, float]:
    """Capped examples-proportional rates: min(n, cap) / sum(min(n, cap)). cap=None is plain proportional."""
    if cap is not None and cap <= 0:
        raise ValueError(f"Mixing cap must be positive (or None for no cap), got {cap}.")
    return normalize({name: float(n if cap is None else min(n, cap)) for name, n in num_examples.items()})


def split_by_weights(task_rates: Mapping[str, float], variants: Mapping[str, Sequence[str]],
                     weights: Mapping[str, float],
                     name_fn: Callable[[str, str], str] = lambda task, variant: f"{task}_{variant}",
                     ) -> dict[str, float]:
    """Shares each task's rate among its variants (e.g. template types) by `weights`, renormalized per task.

    Example: a task at 0.4 with variants zs_opt/fs_opt and weights {zs_opt: 1, fs_opt: 3} gives 0.1 and 0.3.
    `name_fn(task, variant)` names the result's entries.
    """
    out = {}
    for task, rate in task_rates.items():
        vs = list(variants[task])
        missing = [v for v in vs if v not in weights]
        if missing:
            raise ValueError(f"No weight for variant(s) {missing} of task '{task}'; weights given: {dict(weights)}.")
        total = sum(weights[v] for v in vs)
        if total <= 0:
            raise ValueError(f"Variant weights of task '{task}' sum to {total}; give at least one a positive weight.")
        for v in vs:
            out[name_fn(task, v)] = rate * weights[v] / total
    return out


def nested_rates(submixtures: Mapping[str, tuple[float, Mapping[str, float]]]) -> dict[str, float]:
    """Flattens submixtures {name: (weight, {task: rate})} into task rates: weight_s * rate / sum(rates in s).

    Submixture weights are normalized too, so the result sums to 1. A task in several submixtures adds up.
    """
    weights = normalize({name: w for name, (w, _) in submixtures.items()})
    out: dict[str, float] = {}
    for name, (_, rates) in submixtures.items():
        for task, r in normalize(rates).items():
            out[task] = out.get(task, 0.0) + weights[name] * r
    return out


def register_mixture(name: str, rates: Mapping[str, float], *, replace: bool = True) -> seqio.Mixture:
    """Registers a seqio Mixture of tasks (or mixtures) at `rates` (normalized). Replaces one of the same name."""
    if name in seqio.MixtureRegistry.names():
        if not replace:
            raise ValueError(f"Mixture '{name}' is already registered; pass replace=True to replace it.")
        seqio.MixtureRegistry.remove(name)
    rates = normalize(rates)
    return seqio.MixtureRegistry.add(name, sorted(rates.items()))
