"""What gets registered in seqio before a run, chosen by gin, and the names the evaluator scores.

The driver of the data side: the one place (with inspect_cli) that knows both collections and wires them to the
shared machinery: it hands the generated corpus to the vocabulary and tells the pipeline how to register a
collection whose task name it does not know yet.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import gin
import seqio

from flan_mix.data import hf_vocab, jsonl_task, pipeline, vocab
from flan_mix.data.flan import flan_tasks
from flan_mix.data.generated import mixture, seqio_tasks

COLLECTIONS = ("generated", "flan2022")


@gin.configurable
def register_all(collections: Sequence[str] = ("generated",), tokenizer_dir: Optional[str] = None,
                 jsonl_tasks: Optional[Mapping[str, str]] = None):
    """Registers the named collections' tasks and mixtures; returns the shared vocabulary.

    "generated": the offline mini-collection; "flan2022": the Flan 2022 catalog (flan_mix.data.flan.flan_tasks).
    tokenizer_dir: tokenize every task with that directory's tokenizer (an imported model's
    tokenizer.json or spiece.model, see hf_vocab.vocabulary_from_dir) instead of the shared
    SentencePiece vocabulary trained on the generated text.
    jsonl_tasks: {task name: path} of instruction-record files (flan_mix.data.jsonl_task) to register as
    tasks with the same vocabulary, e.g. a curated set: then MIXTURE_OR_TASK_NAME = 'that name' trains on it.
    """
    unknown = sorted(set(collections) - set(COLLECTIONS))
    if unknown:
        raise ValueError(f"unknown collection(s) {unknown}; choose from {COLLECTIONS} "
                         "(gin: register_all.collections).")
    if tokenizer_dir:
        vocabulary = hf_vocab.vocabulary_from_dir(tokenizer_dir)
    else:
        vocabulary = vocab.get_vocabulary(corpus=seqio_tasks.VOCABULARY_CORPUS)
    if "generated" in collections:
        seqio_tasks.register_generated_tasks(vocabulary=vocabulary)
        mixture.register_generated_mixture()
    if "flan2022" in collections:
        # Data dirs, allow_missing_tasks, seed: gin register_flan2022.* (or the macro allow_missing_tasks).
        flan_tasks.register_flan2022(vocabulary=vocabulary)
    if jsonl_tasks:
        jsonl_task.register_jsonl_tasks(dict(jsonl_tasks), vocabulary)
    return vocabulary


def check_name(name: str) -> None:
    """Raises (with close matches and how to list names) unless `name` is a task or mixture."""
    pipeline.get_task_or_mixture(name)


def eval_tasks(names: Sequence[str] | None = None) -> list[dict]:
    """The eval tasks with their ability and group ("trained" or "held-out").

    Default: the zero-shot eval task of every generated task. A mixture's name stands for its
    tasks (sorted); a Flan 2022 task's group is its submixture, e.g. "flan2022 cot".
    """
    if names is None:
        names = seqio_tasks.TRAIN_EVAL_TASK_NAMES + seqio_tasks.HELD_OUT_EVAL_TASK_NAMES
    specs, seen = [], set()
    for given in names:
        found = pipeline.get_task_or_mixture(given)  # raises with close matches for unknown names
        members = sorted(t.name for t in found.tasks) if isinstance(found, seqio.Mixture) else [given]
        for name in members:
            if name in seen:
                continue
            seen.add(name)
            if name.startswith(seqio_tasks.PREFIX):
                info = seqio_tasks.task_info(name)
                specs.append({"name": name, "ability": info["ability"],
                              "group": "held-out" if info["held_out"] else "trained"})
            else:
                specs.append({"name": name, **flan_tasks.eval_group(name)})
    return specs


def _unregistered_collection_hint(name: str) -> Optional[str]:
    if name.startswith(seqio_tasks.PREFIX) and seqio_tasks.registered_config() is None:
        return ("The generated tasks are not registered yet: call flan_mix.data.registration.register_all() "
                "(or flan_mix.data.generated.seqio_tasks.register_generated_tasks(), and "
                "flan_mix.data.generated.mixture.register_generated_mixture() for gen_train_mixture).")
    if name.startswith(flan_tasks.PREFIX) and flan_tasks.registered() is None:
        return ("The Flan 2022 tasks are not registered: add 'flan2022' to the collections "
                "(gin: register_all.collections = ['generated', 'flan2022']).")
    return None


pipeline.add_unknown_name_hint(_unregistered_collection_hint)
