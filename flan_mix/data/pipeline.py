"""seqio dataset -> host-local numpy batches for JAX.

get_batches() gives each host its share of a global batch: the examples are sharded by seqio.ShardInfo
(host `shard_index` of `num_shards` reads a disjoint slice of every task), then shuffled and mixed by seqio,
packed first-fit into rows with the features of seqio.EncDecFeatureConverter (flan_mix.data.packing) and batched
to global_batch_size // num_shards rows. With the same seed and the same number of shards the batch sequence is identical on every run, so resuming at batch N (start_batch=N) gives
exactly batches N, N+1, ... of an uninterrupted run.

get_eval_examples() gives the examples of one task in order with their pretokenized text, for greedy decoding.
"""
from __future__ import annotations

import difflib
import itertools
import logging
from typing import Iterator, Mapping

import numpy as np
import seqio
import tensorflow as tf

from flan_mix.data import packing
from flan_mix.data import tasks as tasks_lib

logger = logging.getLogger(__name__)

MODEL_FEATURES = packing.PACKED_FEATURES
PACK_OPEN_ROWS = 64  # first-fit packing: rows kept open at once (see flan_mix.data.packing)
_CHUNK = 256  # examples per tf.data -> Python crossing


class UnknownTaskError(ValueError):
    """A task or mixture name that is not registered."""


def _unknown(name: str, kinds: str = "task or mixture") -> UnknownTaskError:
    tasks, mixtures = list(seqio.TaskRegistry.names()), list(seqio.MixtureRegistry.names())
    close = difflib.get_close_matches(name, tasks + mixtures, n=5, cutoff=0.5)
    msg = f"Unknown {kinds} '{name}'."
    if close:
        msg += f" Did you mean: {', '.join(close)}?"
    if name.startswith(tasks_lib.PREFIX) and tasks_lib.registered_config() is None:
        msg += (" The generated tasks are not registered yet: call flan_mix.data.tasks.register_generated_tasks()"
                " (and mixtures.register_generated_mixture() for gen_train_mixture).")
    msg += (f" {len(tasks)} tasks and {len(mixtures)} mixtures are registered; list them with "
            "`python run.py inspect`.")
    return UnknownTaskError(msg)


def get_task_or_mixture(name: str) -> seqio.Task | seqio.Mixture:
    """The registered seqio Mixture or Task of that name; UnknownTaskError (with close matches) otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"Expected a task or mixture name (str), got {type(name).__name__} {name!r}.")
    if name in seqio.MixtureRegistry.names():
        return seqio.MixtureRegistry.get(name)
    if name in seqio.TaskRegistry.names():
        return seqio.TaskRegistry.get(name)
    raise _unknown(name)


def get_dataset(mixture_or_task_name: str, *, task_feature_lengths: Mapping[str, int], split: str = "train",
                seed: int, shuffle: bool = True, shard_index: int = 0, num_shards: int = 1,
                num_epochs: int | None = None) -> tf.data.Dataset:
    """This host's stream of mixed, tokenized examples {inputs, targets} (int32, trimmed, ending in EOS)."""
    provider = get_task_or_mixture(mixture_or_task_name)
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, num_shards); got shard_index={shard_index}, "
                         f"num_shards={num_shards}.")
    if split not in provider.splits:
        raise ValueError(f"'{mixture_or_task_name}' has no split '{split}'; "
                         f"its splits are {sorted(provider.splits)}.")
    missing = {"inputs", "targets"} - set(task_feature_lengths)
    if missing:
        raise ValueError(f"task_feature_lengths needs lengths for {sorted(missing)}; "
                         f"got {dict(task_feature_lengths)} "
                         "(e.g. TASK_FEATURE_LENGTHS = {'inputs': 256, 'targets': 64}).")
    config = tasks_lib.registered_config()
    if (config is not None and task_feature_lengths["inputs"] < config.max_input_tokens
            and any(t.name.startswith(tasks_lib.PREFIX) for t in seqio.get_subtasks(provider))):
        logger.warning("task_feature_lengths['inputs']=%d is below the %d tokens generated few-shot prompts are "
                       "sized for; longer prompts will be truncated. Set register_generated_tasks.max_input_tokens "
                       "to match.", task_feature_lengths["inputs"], config.max_input_tokens)
    # What seqio.get_dataset does, plus try_in_mem_cache=False: the generated sources are in memory already.
    ds = provider.get_dataset(
        sequence_length=dict(task_feature_lengths),
        split=split,
        use_cached=False,
        shuffle=shuffle,
        seed=seed,
        shard_info=seqio.ShardInfo(index=shard_index, num_shards=num_shards),
        num_epochs=num_epochs,
        trim_output_features=True,
        try_in_mem_cache=False,
    )
    return ds.map(lambda ex: {k: ex[k] for k in ("inputs", "targets")})


def token_pairs(ds: tf.data.Dataset) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(inputs, targets) numpy arrays, crossing from tf.data to Python a chunk at a time (one crossing per
    example costs ~0.1 ms, more than packing it)."""
    for chunk in ds.ragged_batch(_CHUNK).prefetch(2).as_numpy_iterator():
        yield from zip(_split_rows(chunk["inputs"]), _split_rows(chunk["targets"]))


def _split_rows(batch: np.ndarray) -> list[np.ndarray]:
    # as_numpy_iterator turns a ragged chunk into an object array of rows, or a 2-D array when all rows have
    # the static length.
    return [np.asarray(row, dtype=np.int32) for row in batch]


def get_batches(mixture_or_task_name: str, *, task_feature_lengths: Mapping[str, int], split: str = "train",
                global_batch_size: int, seed: int, shuffle: bool = True, pack: bool = True,
                max_open_rows: int = PACK_OPEN_ROWS, shard_index: int = 0, num_shards: int = 1,
                start_batch: int = 0, num_epochs: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Host-local batches {feature: int32 [global_batch_size // num_shards, length]}.

    Features: those of seqio.EncDecFeatureConverter (encoder_input_tokens, decoder_target_tokens,
    decoder_input_tokens, decoder_loss_weights, and with pack=True the encoder/decoder segment ids and
    positions); packing is first-fit over max_open_rows open rows (flan_mix.data.packing; 1 = seqio's next-fit).
    start_batch skips that many batches (resume). num_epochs=None repeats forever.
    """
    # Checked and built here, not in a generator, so that bad arguments raise at the call.
    if num_shards >= 1 and (global_batch_size < 1 or global_batch_size % num_shards):
        raise ValueError(f"global_batch_size={global_batch_size} must be a positive multiple of the number of "
                         f"hosts/shards num_shards={num_shards}; each host loads global_batch_size // num_shards "
                         "rows. Change BATCH_SIZE or the number of hosts.")
    if start_batch < 0:
        raise ValueError(f"start_batch must be >= 0, got {start_batch}.")
    if max_open_rows < 1:
        raise ValueError(f"max_open_rows must be >= 1 (1 = next-fit packing), got {max_open_rows}.")
    ds = get_dataset(mixture_or_task_name, task_feature_lengths=task_feature_lengths, split=split, seed=seed,
                     shuffle=shuffle, shard_index=shard_index, num_shards=num_shards, num_epochs=num_epochs)
    lengths = {k: task_feature_lengths[k] for k in ("inputs", "targets")}
    rows = global_batch_size // num_shards
    if pack:
        batches = packing.pack_batches(token_pairs(ds), lengths, rows, max_open_rows)
    else:
        batches = packing.unpacked_batches(token_pairs(ds), lengths, rows)
    return itertools.islice(batches, start_batch, None)


def get_eval_examples(task_name: str, *, split: str = "validation", max_examples: int | None = None,
                      feature_length: Mapping[str, int] | int | None = None) -> list[dict]:
    """The examples of one task, in order, for decoding and scoring.

    Each: inputs_pretokenized, targets_pretokenized (str), inputs, targets (np.int32 token ids ending in EOS), and
    the passthrough metadata (task_name, template_id, template_type, answer) when the task has it.
    feature_length: {"inputs": n, "targets": m} (or an int for inputs) trims tokens to that length, EOS kept.
    """
    if task_name in seqio.MixtureRegistry.names():
        mix = seqio.MixtureRegistry.get(task_name)
        raise ValueError(f"'{task_name}' is a mixture; evaluate its tasks one by one: "
                         f"{', '.join(t.name for t in mix.tasks[:10])}{' ...' if len(mix.tasks) > 10 else ''}.")
    if task_name not in seqio.TaskRegistry.names():
        raise _unknown(task_name, "task")
    task = seqio.TaskRegistry.get(task_name)
    if split not in task.splits:
        raise ValueError(f"Task '{task_name}' has no split '{split}'; its splits are {list(task.splits)}.")
    if isinstance(feature_length, int):
        feature_length = {"inputs": feature_length}
    ds = task.get_dataset(sequence_length=dict(feature_length) if feature_length else None, split=split,
                          shuffle=False, num_epochs=1, try_in_mem_cache=False)
    if max_examples is not None:
        ds = ds.take(max_examples)
    out = []
    for ex in ds.as_numpy_iterator():
        rec = {}
        for k, v in ex.items():
            if isinstance(v, bytes):
                rec[k] = v.decode("utf-8")
            elif k in ("inputs", "targets"):
                rec[k] = np.asarray(v, dtype=np.int32)
            else:
                rec[k] = v
        out.append(rec)
    return out
