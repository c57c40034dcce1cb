"""What gets registered in seqio before a run, chosen by gin, and the names the evaluator scores."""
from __future__ import annotations

from typing import Sequence

import gin

from flan_mix.data import flan_tasks, mixtures, pipeline, tasks, vocab

COLLECTIONS = ("generated", "flan2022")


@gin.configurable
def register_all(collections: Sequence[str] = ("generated",)):
    """Registers the named collections' tasks and mixtures; returns the shared vocabulary.

    "generated": the offline mini-collection; "flan2022": the Flan 2022 catalog (flan_mix.data.flan_tasks).
    """
    unknown = sorted(set(collections) - set(COLLECTIONS))
    if unknown:
        raise ValueError(f"unknown collection(s) {unknown}; choose from {COLLECTIONS} "
                         "(gin: register_all.collections).")
    vocabulary = vocab.get_vocabulary()
    if "generated" in collections:
        tasks.register_generated_tasks(vocabulary=vocabulary)
        mixtures.register_generated_mixture()
    if "flan2022" in collections:
        # Data dirs, allow_missing_tasks, seed: gin register_flan2022.* (or the macro allow_missing_tasks).
        flan_tasks.register_flan2022(vocabulary=vocabulary)
    return vocabulary


def check_name(name: str) -> None:
    """Raises (with close matches and how to list names) unless `name` is a task or mixture."""
    pipeline.get_task_or_mixture(name)


def eval_tasks(names: Sequence[str] | None = None) -> list[dict]:
    """The eval tasks with their ability and group ("trained" or "held-out").

    Default: the zero-shot eval task of every generated task.
    """
    if names is None:
        names = tasks.TRAIN_EVAL_TASK_NAMES + tasks.HELD_OUT_EVAL_TASK_NAMES
    specs = []
    for name in names:
        check_name(name)
        info = tasks.task_info(name) if name.startswith(tasks.PREFIX) else {}
        specs.append({"name": name, "ability": info.get("ability", ""),
                      "group": "held-out" if info.get("held_out") else "trained"})
    return specs
