"""The one interface every Flan 2022 data source offers, and the machinery the file-backed ones share.

A source (one module per kind: cot, niv2, tfds, hf) is a seqio.DataSource that is also an
:class:`ExampleSource`: the Flan 2022 tasks read its examples through tf.data (``get_dataset``, the seqio path)
or in plain Python (``iter_examples``, what the mixture streamer reads), and check before registration whether
its data is here (``check_available``).

Every source yields dict examples whose values are strings or lists of strings (tf.string scalars or vectors
on the tf.data path). Every source is deterministic (a ``shuffle=True`` with ``seed=None`` uses seed 0) and
shards per host with ``seqio.ShardInfo``: the examples are put in one global order (the same on every host) and
host ``i`` of ``n`` takes positions ``i, i+n, i+2n, ...``. The shards are disjoint and together they cover the
split.

Splits: every source has ``train`` and ``validation`` (held-in evaluation). Where the data has its own validation
split it is used (TFDS: the dataset's ``validation`` split, or the complement of the loader's slice when the task
trains on part of validation; HF: ``validation``). Where it has none (CoT TSVs, NIv2 task files) validation is a
held-out slice of the file (:func:`holdout_split`) that the train split leaves out, so nothing evaluated was
trained on. Both splits are deterministic and shard per host as above.

Missing data raises ``MissingDataError`` (task name, what is missing, how to get it). Malformed files raise
``MalformedDataError`` (file, line or field, problem); raised inside tf.data, they reach the caller as
themselves (flan_mix.data.tf_errors). Nothing is dropped silently: ``skip_malformed=True`` skips bad
lines/instances and logs how many were skipped.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
import seqio
import tensorflow as tf

from flan_mix.data import task_streams, tf_errors
from flan_mix.data.data_errors import MissingDataError

TRAIN = "train"
VALIDATION = "validation"
#: Held-out validation of the sources without one (CoT, NIv2): the last holdout_size(n) positions of one fixed
#: permutation of the file's n examples (seed HOLDOUT_SEED, the same whatever the registration seed).
HOLDOUT_SEED = 2022
HOLDOUT_FRACTION = 0.05
HOLDOUT_MAX = 200
_CHUNK = 256  # examples per Python-generator step (see IndexedDataSource._dataset_for_order)
_PY_CHUNK = 32  # examples read at a time by iter_examples (one file open per chunk for NIv2)
_ROW_CHUNK = 256  # examples per tf.data -> Python crossing in dataset_rows


@runtime_checkable
class ExampleSource(Protocol):
    """What a Flan 2022 task needs of its source, besides seqio.DataSource's get_dataset."""

    def check_available(self) -> None:
        """Raises MissingDataError (or OptionalDependencyError) if the data cannot be read here. Cheap: reads
        no examples."""

    def iter_examples(self, split: str = TRAIN, shuffle: bool = True, seed: Optional[int] = None,
                      shard_info: Optional[seqio.ShardInfo] = None,
                      num_epochs: Optional[int] = 1) -> Iterator[dict[str, Any]]:
        """The examples get_dataset gives, as Python dicts; num_epochs=None repeats forever."""


def dataset_rows(dataset: tf.data.Dataset) -> Iterator[dict[str, Any]]:
    """A dataset's examples as Python values, crossing from tf.data a chunk at a time (one crossing per example
    costs ~0.1 ms, more than rendering it)."""
    for chunk in tf_errors.numpy_rows(dataset.ragged_batch(_ROW_CHUNK)):
        keys = list(chunk)
        for i in range(len(chunk[keys[0]])):
            yield {k: chunk[k][i] for k in keys}


def as_int_seed(seed: Any) -> int:
    if seed is None:
        return 0
    if isinstance(seed, tf.Tensor):
        seed = seed.numpy()
    return int(seed)


def example_order(
    num_examples: int, shuffle: bool, seed: Optional[int], shard_info: Optional[seqio.ShardInfo]
) -> np.ndarray:
    """Positions this host reads, in order: one global order, then every num_shards-th position."""
    if shard_info is not None and not 0 <= shard_info.index < shard_info.num_shards:
        raise ValueError(f"Bad shard_info {shard_info}: index must be in [0, {shard_info.num_shards})")
    return task_streams.epoch_order(num_examples, shuffle, as_int_seed(seed), 0, shard_info)


def holdout_size(num_examples: int) -> int:
    """Examples held out for validation from a file of num_examples: max(1, min(HOLDOUT_MAX, floor(5% of n))),
    and none for a file of fewer than 2 examples (its one example stays in train)."""
    if num_examples < 2:
        return 0
    return max(1, min(HOLDOUT_MAX, int(num_examples * HOLDOUT_FRACTION)))


def holdout_split(num_examples: int) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, validation positions), each sorted: validation is the last holdout_size(n) positions of
    a fixed permutation (HOLDOUT_SEED), train is the rest. Disjoint, together exactly 0..n-1, independent of any
    run seed and of the number of hosts."""
    perm = np.random.default_rng(HOLDOUT_SEED).permutation(num_examples)
    cut = num_examples - holdout_size(num_examples)
    return np.sort(perm[:cut]), np.sort(perm[cut:])


def check_split(task: str, split: str, splits: Sequence[str]) -> None:
    if split not in splits:
        raise ValueError(f"Task {task!r}: unknown split {split!r}; this source has {', '.join(splits)}")


def require_local_file(task_name: str, directory: Optional[Path], dir_label: str, param: str,
                        locate: Callable[[], tuple[Path, str]], how_to_get: str) -> None:
    """The check shared by the file-backed sources: the directory was given, exists and holds the file.

    `locate` is called only once the directory exists (finding the file may search inside it) and
    returns the file's path and the message to give if it is missing.
    """
    if directory is None:
        raise MissingDataError(task_name, f"no {dir_label} was given ({param} is None)", how_to_get)
    if not directory.is_dir():
        raise MissingDataError(task_name, f"{dir_label} {directory} does not exist", how_to_get)
    path, missing = locate()
    if not path.is_file():
        raise MissingDataError(task_name, missing, how_to_get)


class IndexedDataSource(seqio.DataSource, abc.ABC):
    """A source whose examples can be addressed by position 0..n-1 (CoT TSV, NIv2 file, HF dataset).

    Splits: by default (held_out_validation=True, the file sources) train and validation are the two parts of
    holdout_split over the n positions. A source with real per-split data (HF) overrides _split_positions and
    _examples_of.
    """

    #: Whether validation is a held-out slice of the examples (and train the rest).
    held_out_validation: bool = True

    def __init__(self, task_name: str, output_signature: Mapping[str, tf.TensorSpec]):
        super().__init__(splits=(TRAIN, VALIDATION), num_input_examples=None, caching_permitted=True)
        self.task_name = task_name
        self.output_signature = dict(output_signature)

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def list_shards(self, split: str) -> Sequence[str]:
        return [f"{self.task_name}:{split}"]

    def num_input_examples(self, split: str) -> int:
        check_split(self.task_name, split, self.splits)
        return len(self._split_positions(split))

    def _split_positions(self, split: str) -> np.ndarray:
        """The positions of the split's examples, in a fixed order (reads/validates what _prepare needs)."""
        n = self._prepare()
        if not self.held_out_validation:
            return np.arange(n)
        train, validation = holdout_split(n)
        return train if split == TRAIN else validation

    def _order(self, split: str, shuffle: bool, seed: Optional[int],
               shard_info: Optional[seqio.ShardInfo]) -> np.ndarray:
        """Positions this host reads for the split, in order (example_order over the split's positions)."""
        positions = self._split_positions(split)
        return positions[example_order(len(positions), shuffle, seed, shard_info)]

    def _examples_of(self, split: str, positions: np.ndarray) -> list[dict[str, Any]]:
        """The examples of a split at positions (those _split_positions gives)."""
        del split  # one set of positions for all splits
        return self._examples(positions)

    @abc.abstractmethod
    def check_available(self) -> None:
        """Raises MissingDataError if the data cannot be found. Cheap; called by get_dataset."""

    @abc.abstractmethod
    def _prepare(self) -> int:
        """Reads/validates what is needed to address examples; returns how many there are."""

    @abc.abstractmethod
    def _example(self, position: int) -> dict[str, Any]:
        """The example at a position, as str / list-of-str values."""

    def _examples(self, positions: np.ndarray) -> list[dict[str, Any]]:
        return [self._example(int(p)) for p in positions]

    #: Whether _prepare runs when iteration starts (True) or inside get_dataset (False).
    lazy: bool = False

    def get_dataset(
        self,
        split: str = TRAIN,
        shuffle: bool = True,
        seed: Optional[int] = None,
        shard_info: Optional[seqio.ShardInfo] = None,
        *,
        sequence_length: Optional[Mapping[str, int]] = None,  # unused
        use_cached: bool = False,  # unused
        num_epochs: Optional[int] = 1,  # unused
    ) -> tf.data.Dataset:
        del sequence_length, use_cached, num_epochs
        check_split(self.task_name, split, self.splits)
        self.check_available()
        seed = as_int_seed(seed)
        if not self.lazy:
            order = self._order(split, shuffle, seed, shard_info)
            return self._dataset_for_order(lambda: order, split)
        return self._dataset_for_order(lambda: self._order(split, shuffle, seed, shard_info), split)

    def iter_examples(
        self,
        split: str = TRAIN,
        shuffle: bool = True,
        seed: Optional[int] = None,
        shard_info: Optional[seqio.ShardInfo] = None,
        num_epochs: Optional[int] = 1,
    ) -> Iterator[dict[str, Any]]:
        """The same examples as get_dataset, as Python dicts and without TensorFlow (what the mixture streamer
        reads); num_epochs=None repeats forever, each epoch in a new order when shuffling."""
        return self.indexed_stream(split, shuffle=shuffle, seed=seed, shard_info=shard_info, num_epochs=num_epochs)

    def indexed_stream(self, split: str = TRAIN, *, shuffle: bool = True, seed: Optional[int] = None,
                       shard_info: Optional[seqio.ShardInfo] = None, num_epochs: Optional[int] = 1,
                       state: Optional[dict] = None) -> task_streams.IndexedStream:
        """iter_examples as a resumable IndexedStream of raw examples (state: one it gave, to continue)."""
        check_split(self.task_name, split, self.splits)
        self.check_available()
        positions = self._split_positions(split)
        return task_streams.IndexedStream(
            len(positions), lambda idx: self._examples_of(split, positions[idx]), seed=as_int_seed(seed),
            shuffle=shuffle, shard_info=shard_info, num_epochs=num_epochs, state=state, chunk=_PY_CHUNK)

    def _dataset_for_order(self, order_fn: Callable[[], np.ndarray], split: str = TRAIN) -> tf.data.Dataset:
        """Examples of the split at the positions order_fn() returns (called when iteration starts).

        A Python generator costs ~0.3 ms per element in tf.data, so examples are produced in
        chunks of _CHUNK (vector fields as values + row lengths) and unbatched in the graph.
        """
        signature = self.output_signature
        vectors = [k for k, spec in signature.items() if spec.shape.rank == 1]
        scalars = [k for k in signature if k not in vectors]
        chunk_signature = {k: tf.TensorSpec([None], tf.string) for k in scalars}
        for k in vectors:
            chunk_signature[f"{k}/values"] = tf.TensorSpec([None], tf.string)
            chunk_signature[f"{k}/lengths"] = tf.TensorSpec([None], tf.int64)

        def strings(values: list) -> np.ndarray:
            return np.array(values, dtype=object) if values else np.zeros([0], dtype=np.bytes_)

        def generate():
            order = order_fn()
            for start in range(0, len(order), _CHUNK):
                examples = self._examples_of(split, order[start : start + _CHUNK])
                chunk = {k: strings([e[k] for e in examples]) for k in scalars}
                for k in vectors:
                    chunk[f"{k}/values"] = strings([v for e in examples for v in e[k]])
                    chunk[f"{k}/lengths"] = np.array([len(e[k]) for e in examples], dtype=np.int64)
                yield chunk

        def assemble(chunk):
            out = {}
            for k in signature:
                if k in vectors:
                    lengths = chunk[f"{k}/lengths"]
                    padded = tf.RaggedTensor.from_row_lengths(chunk[f"{k}/values"], lengths).to_tensor("")
                    out[k] = (padded, lengths)
                else:
                    out[k] = chunk[k]
            return out

        def trim(example):  # padded rows back to variable-length string vectors (plain tf.Tensor)
            return {k: (v[0][: v[1]] if k in vectors else v) for k, v in example.items()}

        ds = tf_errors.from_generator(generate, output_signature=chunk_signature)
        return ds.map(assemble).unbatch().map(trim)


def lookup_field(task: str, example: Mapping[str, Any], out: str, path: str) -> Any:
    value: Any = example
    walked = []
    for part in path.split("/"):
        if not isinstance(value, Mapping) or part not in value:
            have = sorted(value) if isinstance(value, Mapping) else []
            at = "/".join(walked) or "<top level>"
            raise ValueError(
                f"Task {task!r}: field {out!r} reads feature {path!r}, but {at} has no {part!r}; available: {', '.join(have)}"
            )
        value = value[part]
        walked.append(part)
    return value
