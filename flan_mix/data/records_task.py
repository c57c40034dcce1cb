"""seqio Tasks over in-memory (inputs, targets) text pairs: how a curated or sampled training set becomes
something the trainer can read by name.

Curation (TAPIR rounds) and analysis (DoIT cells) build training sets in Python; this registers such a set as a
seqio Task (and, on request, a one-task Mixture) with the same tokenization as the generated collection, so
`run_config.mixture_or_task_name` can point at it. Registration is in-process: a new process registers the set
again from the JSONL file its stage wrote, which is also what makes those stages resumable.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import seqio
import tensorflow as tf

from flan_mix.data import mixing, seqio_helpers

_KEYS = ("inputs", "targets")


def _source(name: str, splits: Mapping[str, Sequence[Mapping[str, str]]]) -> seqio.FunctionDataSource:
    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        del shuffle_files, seed  # one in-memory shard; seqio's own shuffle buffer varies the order
        if split not in splits:
            raise ValueError(f"Task '{name}' has no split '{split}'; its splits are {sorted(splits)}.")
        rows = splits[split]
        return tf.data.Dataset.from_tensor_slices(
            {k: tf.constant([r[k] for r in rows], dtype=tf.string, shape=(len(rows),)) for k in _KEYS})

    return seqio.FunctionDataSource(dataset_fn, splits=list(splits),
                                    num_input_examples={s: len(rows) for s, rows in splits.items()})


def register_records_task(name: str, splits: Mapping[str, Sequence[Mapping[str, str]]], vocabulary,
                          *, mixture: str | None = None) -> str:
    """Registers (replacing one of the same name) a Task `name` whose splits are lists of {"inputs", "targets"}
    strings; with `mixture`, also a Mixture of that name holding the task alone. Returns the task name."""
    for split, rows in splits.items():
        if not rows:
            raise ValueError(f"register_records_task('{name}'): split '{split}' is empty; a seqio task needs "
                             "at least one example per split.")
        for i, row in enumerate(rows):
            bad = [k for k in _KEYS if not isinstance(row.get(k), str) or (k == "targets" and not row[k])]
            if bad:
                raise ValueError(f"register_records_task('{name}'): split '{split}' row {i} needs non-empty "
                                 f"string field(s) {bad}; got {dict(row)!r:.200}.")
    for mix in list(seqio.MixtureRegistry.names()):  # a mixture over the old task would point at a stale object
        if name in {t.name for t in seqio.MixtureRegistry.get(mix).tasks}:
            seqio.MixtureRegistry.remove(mix)
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    features = {k: seqio.Feature(vocabulary=vocabulary, add_eos=True, dtype=tf.int32) for k in _KEYS}
    seqio.TaskRegistry.add(name, source=_source(name, {s: [dict(r) for r in rows] for s, rows in splits.items()}),
                           output_features=features,
                           preprocessors=[seqio_helpers.tokenize, seqio_helpers.append_eos_after_trim],
                           shuffle_buffer_size=seqio_helpers.SHUFFLE_BUFFER_SIZE)
    if mixture:
        mixing.register_mixture(mixture, {name: 1.0})
    return name
