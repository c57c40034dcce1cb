"""Generative evaluation: greedy-decode each eval task, score exact match, compare to baselines.

Two trivial baselines sit beside the model in the table:
  majority - always answer the most frequent target of the evaluated split itself. It peeks at
             the labels, so it is an upper bound on any constant-answer baseline.
  copy     - answer with the input text.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import gin
import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from flan_mix.evaluation import metrics, report
from flan_mix.infer import decoding
from flan_mix.train import partitioning

COLUMNS = ("task", "ability", "group", "n", "model_em", "majority_em", "copy_em")


def _pad_rows(rows: Sequence[np.ndarray], length: int) -> np.ndarray:
    out = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
        row = np.asarray(row)[:length]
        out[i, :len(row)] = row
    return out


def generate(model, params, token_rows: Sequence[np.ndarray], vocabulary, *, mesh: Mesh,
             inputs_length: int, max_decode_len: int, batch_size: int, desc: str = "decode",
             temperature: float = 0.0, seed: int = 0) -> list[str]:
    """Decodes every row; batches are padded to a fixed size so one program serves them all."""
    predictions: list[str] = []
    rng = jax.random.PRNGKey(seed)
    for start in tqdm(range(0, len(token_rows), batch_size), desc=desc, unit="batch", leave=False):
        chunk = list(token_rows[start:start + batch_size])
        tokens = _pad_rows(chunk + [np.zeros(1, np.int32)] * (batch_size - len(chunk)), inputs_length)
        with mesh:
            tokens = jax.device_put(tokens, partitioning.replicated(mesh))
            ids = decoding.decode(model, params, tokens, jax.random.fold_in(rng, start),
                                  max_decode_len=max_decode_len, temperature=temperature)
        for row in decoding.strip_after_eos(np.asarray(jax.device_get(ids))[:len(chunk)]):
            predictions.append(vocabulary.decode(row))
    return predictions


def score_task(predictions: Sequence[str], examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    targets = [ex["targets_pretokenized"] for ex in examples]
    majority = metrics.majority_answer(targets)
    return {"n": len(targets),
            "model_em": metrics.exact_match(predictions, targets),
            "majority_em": metrics.exact_match([majority] * len(targets), targets),
            "copy_em": metrics.exact_match([ex["inputs_pretokenized"] for ex in examples], targets)}


def _mean_row(rows, group: str) -> dict[str, Any]:
    sub = [r for r in rows if r["group"] == group]
    row = {"task": f"MEAN ({group})", "ability": "", "group": group, "n": sum(r["n"] for r in sub)}
    for col in ("model_em", "majority_em", "copy_em"):
        row[col] = float(np.mean([r[col] for r in sub])) if sub else 0.0
    return row


@gin.configurable
def evaluate_generation(model, params, *, mesh: Mesh, vocabulary, out_dir: str,
                        task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
                        batch_size: int = 64, max_examples_per_task: int | None = 200,
                        tasks: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Scores every registered eval task (or `tasks`) and writes eval_results.{json,md}."""
    from flan_mix.data import pipeline, registration
    eval_tasks = registration.eval_tasks(tasks)
    rows = []
    for spec in tqdm(eval_tasks, desc="eval tasks", unit="task"):
        examples = pipeline.get_eval_examples(spec["name"], split="validation",
                                              max_examples=max_examples_per_task,
                                              feature_length=task_feature_lengths["inputs"])
        preds = generate(model, params, [ex["inputs"] for ex in examples], vocabulary, mesh=mesh,
                         inputs_length=task_feature_lengths["inputs"],
                         max_decode_len=task_feature_lengths["targets"], batch_size=batch_size,
                         desc=spec["name"])
        rows.append({"task": spec["name"], "ability": spec["ability"], "group": spec["group"],
                     **score_task(preds, examples)})
    groups = sorted({r["group"] for r in rows})
    rows += [_mean_row(rows, g) for g in groups]
    table = report.write_report(rows, COLUMNS, out_dir, "eval_results",
                                title="Exact match (%) by greedy decoding")
    print(table)
    return rows
