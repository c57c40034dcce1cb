"""A JSONL file of instruction records (flan_mix.data.instruction_records) as a seqio Task, so a curated set
trains like any registered task: `--gin.register_all.jsonl_tasks="{'my_set': '/path/f.jsonl'}"` then
`--gin.MIXTURE_OR_TASK_NAME="'my_set'"`.

inputs = the record's prompt (instruction, then the input after a blank line; the same text the curation
stages score), targets = its output; tokenized with the vocabulary the collections use, EOS appended after
trimming (the generated tasks' preprocessors). Records carrying `error` or `skipped` (a stage could not score
or repair them) are not training data: they are left out and their count is logged. The file is read when the
task is registered, so a bad line fails the run at startup, naming file and line. The records stay in memory,
so the training stream reads them by position and resumes without re-reading (seqio_helpers.InMemoryTask).

Shared data code: this module knows the record format, not any collection.
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

import seqio
import tensorflow as tf

from flan_mix.data import instruction_records, seqio_helpers
from flan_mix.data.data_errors import DataError

logger = logging.getLogger(__name__)

SPLIT = "train"
_NOT_TRAINING = ("error", "skipped")
_OURS: set[str] = set()  # the names registered here (replaced on re-registration; a collection's never are)


class JsonlTaskError(DataError, ValueError):
    """A JSONL file that cannot become a task (names the file, line and field)."""


def read_training_pairs(path: str) -> tuple[list[dict[str, str]], int]:
    """([{"inputs", "targets"}], number of records left out for `error`/`skipped`), checked line by line."""
    if not os.path.isfile(path):
        raise JsonlTaskError(f"{path}: no such file (gin: register_all.jsonl_tasks). Write one with "
                             "`python run.py curate export` or a curation stage.")
    pairs, left_out = [], 0
    for rec in instruction_records.iter_records(path):
        if any(rec.get(k) for k in _NOT_TRAINING):
            left_out += 1
            continue
        pairs.append({"inputs": instruction_records.prompt_text(rec), "targets": rec["output"]})
    return pairs, left_out


def register_jsonl_task(name: str, path: str, vocabulary: seqio.Vocabulary) -> seqio.Task:
    """Registers (or replaces) the seqio Task `name` over the records of `path`; one split, "train"."""
    if name in seqio.TaskRegistry.names() and name not in _OURS:
        raise JsonlTaskError(f"register_all.jsonl_tasks: '{name}' is already a registered task of a collection; "
                             f"give {path} another task name.")
    pairs, left_out = read_training_pairs(path)
    if left_out:
        logger.warning("%s: left out %d record(s) carrying 'error' or 'skipped' (not training data); %d kept.",
                       path, left_out, len(pairs))
    if not pairs:
        raise JsonlTaskError(f"{path}: no training records (of {left_out} records, all carry 'error' or "
                             f"'skipped'); task '{name}' would be empty.")
    inputs = [p["inputs"] for p in pairs]
    targets = [p["targets"] for p in pairs]

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        del shuffle_files, seed  # one in-memory file; seqio's shuffle buffer does the shuffling
        if split != SPLIT:
            raise ValueError(f"Task '{name}' (from {path}) has only the '{SPLIT}' split, not '{split}'.")
        return tf.data.Dataset.from_tensor_slices({"inputs": inputs, "targets": targets})

    features = {k: seqio.Feature(vocabulary=vocabulary, add_eos=True, dtype=tf.int32) for k in ("inputs", "targets")}
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    task = seqio_helpers.InMemoryTask(
        name,
        records_fn=lambda split: pairs,
        source=seqio.FunctionDataSource(dataset_fn, splits=(SPLIT,), num_input_examples={SPLIT: len(pairs)}),
        output_features=features,
        preprocessors=[seqio_helpers.tokenize, seqio_helpers.append_eos_after_trim],
        shuffle_buffer_size=seqio_helpers.SHUFFLE_BUFFER_SIZE,
    )
    seqio.TaskRegistry.add_provider(name, task)
    _OURS.add(name)
    logger.info("Registered JSONL task '%s': %d records from %s.", name, len(pairs), path)
    return task


def register_jsonl_tasks(files: dict[str, str] | Sequence[tuple[str, str]], vocabulary: seqio.Vocabulary) -> list[str]:
    items = files.items() if isinstance(files, dict) else files
    names = []
    for name, path in items:
        if not isinstance(name, str) or not isinstance(path, str):
            raise JsonlTaskError(f"register_all.jsonl_tasks: expected {{'task_name': '/path/file.jsonl'}}, got "
                                 f"{name!r}: {path!r}.")
        register_jsonl_task(name, path, vocabulary)
        names.append(name)
    return names
