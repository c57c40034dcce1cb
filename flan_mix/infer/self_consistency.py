"""Self-consistency for chain-of-thought (Wang et al., 2022): sample k reasoning paths per prompt,
extract each one's final answer, and return the answer most paths agree on.

Pure Python around a generate function, so any decoder (and a fake one in tests) can drive it.
"""
from __future__ import annotations

from typing import Callable, Sequence

GenerateFn = Callable[[Sequence, int], list[str]]  # (prompts, seed) -> one generation per prompt
ExtractFn = Callable[[str], "str | None"]          # generation -> answer, None when it gives none


def majority_vote(answers: Sequence[str]) -> tuple[str, int]:
    """(the most frequent answer, its count). Ties go to the answer seen first, so the result
    never depends on hashing or set order."""
    if not answers:
        raise ValueError("majority_vote: no answers to vote on.")
    counts: dict[str, int] = {}
    for answer in answers:  # dicts keep first-insertion order, which is the tie-break
        counts[answer] = counts.get(answer, 0) + 1
    best = max(counts.values())
    winner = next(answer for answer, count in counts.items() if count == best)
    return winner, best


def self_consistency(generate_fn: GenerateFn, prompts: Sequence, k: int, extract_fn: ExtractFn, *,
                     seed: int = 0) -> list[dict]:
    """One dict per prompt: answer (None when no sample gave one), votes, samples (the k
    generations, in seed order) and answers (extract_fn of each; None ones abstain from the vote).

    generate_fn is called k times, with seeds seed, seed + 1, ..., seed + k - 1: it must sample
    (temperature > 0), or the k paths are one path repeated.
    """
    if k < 1:
        raise ValueError(f"self_consistency: k must be >= 1, got {k}.")
    runs = [list(generate_fn(prompts, seed + i)) for i in range(k)]
    for i, run in enumerate(runs):
        if len(run) != len(prompts):
            raise ValueError(f"self_consistency: generate_fn(seed={seed + i}) returned {len(run)} generations "
                             f"for {len(prompts)} prompts; it must return one per prompt, in order.")
    results = []
    for j in range(len(prompts)):
        samples = [run[j] for run in runs]
        answers = [extract_fn(sample) for sample in samples]
        voting = [a for a in answers if a is not None]
        answer, votes = majority_vote(voting) if voting else (None, 0)
        results.append({"answer": answer, "votes": votes, "samples": samples, "answers": answers})
    return results


def sampling_generate_fn(model, params, vocabulary, *, temperature: float = 0.7, **generate_kwargs) -> GenerateFn:
    """A GenerateFn over flan_mix.infer.decoding.generate: prompts are token-id rows, each seed a
    sampling run. generate_kwargs: mesh, inputs_length, max_decode_len, batch_size (see generate)."""
    from flan_mix.infer.decoding import generate  # imports jax; the voting above stays pure Python

    if temperature <= 0:
        raise ValueError(f"sampling_generate_fn: temperature must be > 0 for k different paths, got {temperature}.")
    return lambda prompts, seed: generate(model, params, prompts, vocabulary, temperature=temperature,
                                          seed=seed, **generate_kwargs)
