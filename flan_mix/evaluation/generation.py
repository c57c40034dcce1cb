"""Evaluation of the eval tasks: greedy decoding scored by exact match, and multiple-choice tasks
also by rank classification, each beside trivial baselines.

  model_em    - exact match of the greedy generation.
  majority_em - always answer the most frequent target of the evaluated split itself. It peeks at
                the labels, so it is an upper bound on any constant-answer baseline.
  copy_em     - answer with the input text.
  model_rank  - multiple choice only: the option with the highest log-likelihood under the model
                (Flan's and T0's way of scoring options), accuracy in %.
  chance      - multiple choice only: the expected accuracy of picking an option at random.
  answer_em   - chain-of-thought tasks only (every target ends in one of the CoT answer sentences):
                exact match of the final answers extracted from generation and target, since a
                rationale is almost never reproduced word for word. Shown when some task has it.

`tasks` may name mixtures too (e.g. a Flan 2022 submixture): each stands for its tasks, scored on
their validation splits (held-in for a run that trained on them; flan_mix.data.flan.sources).
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import gin
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from flan_mix.data import templates
from flan_mix.evaluation import metrics, report
from flan_mix.infer import scoring
from flan_mix.infer.decoding import generate
from flan_mix.infer.loading import load_model
from flan_mix.models.base import Model
from flan_mix.runtime.run_config import run_config

COLUMNS = ("task", "ability", "group", "n", "model_em", "majority_em", "copy_em", "model_rank", "chance",
           "answer_em")
SCORE_COLUMNS = COLUMNS[4:]


def score_task(predictions: Sequence[str], examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    targets = [ex["targets_pretokenized"] for ex in examples]
    majority = metrics.majority_answer(targets)
    target_answers = [templates.extract_cot_answer(t) for t in targets]
    is_cot = bool(targets) and all(a is not None for a in target_answers)
    return {"n": len(targets),
            "model_em": metrics.exact_match(predictions, targets),
            "majority_em": metrics.exact_match([majority] * len(targets), targets),
            "copy_em": metrics.exact_match([ex["inputs_pretokenized"] for ex in examples], targets),
            "answer_em": metrics.exact_match([templates.extract_cot_answer(p) or "" for p in predictions],
                                             target_answers) if is_cot else None}


def _mean_row(rows, group: str) -> dict[str, Any]:
    """Unweighted means over the group's tasks; the multiple-choice columns over the tasks that have them."""
    sub = [r for r in rows if r["group"] == group]
    row = {"task": f"MEAN ({group})", "ability": "", "group": group, "n": sum(r["n"] for r in sub)}
    for col in SCORE_COLUMNS:
        values = [r[col] for r in sub if r.get(col) is not None]
        row[col] = float(np.mean(values)) if values else None
    return row


def rank_classify(model: Model, params, examples: Sequence[Mapping[str, Any]], vocabulary, *, mesh: Mesh,
                  task_feature_lengths: Mapping[str, int], batch_size: int, desc: str) -> dict[str, Any]:
    """model_rank and chance (%) of a multiple-choice task; None for both when it has no options."""
    options = [json.loads(ex.get("options") or "[]") for ex in examples]
    if not examples or not all(options):
        return {"model_rank": None, "chance": None}
    option_ids = [[np.asarray(vocabulary.encode(o) + [vocabulary.eos_id], np.int32) for o in opts] for opts in options]
    ranked = scoring.rank_options(model, params, [ex["inputs"] for ex in examples], option_ids, mesh=mesh,
                                  inputs_length=task_feature_lengths["inputs"],
                                  targets_length=task_feature_lengths["targets"], batch_size=batch_size,
                                  desc=f"{desc} (rank)")
    picked = [opts[r["choice"]] for opts, r in zip(options, ranked)]
    return {"model_rank": metrics.exact_match(picked, [ex["targets_pretokenized"] for ex in examples]),
            "chance": 100.0 * float(np.mean([1.0 / len(opts) for opts in options]))}


@gin.configurable
def evaluate_generation(model: Model, params, *, mesh: Mesh, vocabulary, out_dir: str,
                        task_feature_lengths: Mapping[str, int], batch_size: int = 64, max_examples_per_task: int | None = 200,
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
                     **score_task(preds, examples),
                     **rank_classify(model, params, examples, vocabulary, mesh=mesh,
                                     task_feature_lengths=task_feature_lengths, batch_size=batch_size,
                                     desc=spec["name"])})
    groups = sorted({r["group"] for r in rows})
    rows += [_mean_row(rows, g) for g in groups]
    columns = [c for c in COLUMNS if c != "answer_em" or any(r.get(c) is not None for r in rows)]
    table = report.write_report(rows, columns, out_dir, "eval_results",
                                title="Accuracy (%): exact match of greedy decoding (model_em), rank "
                                      "classification of the options (model_rank)")
    print(table)
    return rows


@gin.configurable
def evaluate(checkpoint_step: int | None = None) -> list[dict[str, Any]]:
    """`python run.py eval`: restores MODEL_DIR's checkpoint (the latest unless checkpoint_step)
    and writes MODEL_DIR/eval_results.{json,md}."""
    run = run_config()
    loaded = load_model(run.model_dir, checkpoint_step)
    return evaluate_generation(loaded.model, loaded.params, mesh=loaded.mesh, vocabulary=loaded.vocabulary,
                               out_dir=run.model_dir, task_feature_lengths=run.task_feature_lengths)
