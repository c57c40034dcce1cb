"""TFDS: a prepared TFDS dataset (read-only: never downloads), fields mapped and turned into strings."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import seqio
import tensorflow as tf

from flan_mix.data.data_errors import MissingDataError
from flan_mix.data.flan.sources.base import (TRAIN, VALIDATION, as_int_seed, check_split, dataset_rows,
                                              lookup_field)

#: Joins the items of one row when a rank-2 feature (e.g. DART's [subject, relation, object] triples) is turned
#: into a vector of strings. A visible separator keeps the row's structure recoverable by splitting on it.
ROW_JOINER = " | "


def tfds_validation_split(train_split: str) -> Optional[str]:
    """The TFDS split a task validates on, given the split (or slice) it trains on.

    A task that trains on (part of) another split validates on the dataset's ``validation`` split. A task that
    trains on a slice of ``validation`` itself (story_cloze: ``validation[:-200]``) validates on the complement
    (``validation[-200:]``); None when the complement cannot be read off the slice.
    """
    base = train_split.split("[", 1)[0].strip()
    if base != VALIDATION:
        return VALIDATION
    m = re.fullmatch(r"validation\[:(-?\d+%?)\]", train_split.replace(" ", ""))
    if not m:
        return None
    cut = m.group(1)
    return f"validation[{cut}:]"


def _stringify(task: str, out: str, value: Any) -> tf.Tensor:
    if isinstance(value, dict):
        raise ValueError(
            f"Task {task!r}: field {out!r} maps to a nested feature with keys {sorted(value)}; map one of its leaves, e.g. '{out}=<path>/{sorted(value)[0]}'"
        )
    rank = value.shape.rank
    if rank == 2:
        # Sources and adapters deal in scalars and vectors of strings only, so a matrix (dense, or ragged when the
        # rows vary in length) becomes one string per row, its items joined by ROW_JOINER.
        if value.dtype != tf.string:  # items to strings first (flat values: rank 1, so no recursion here)
            if isinstance(value, tf.RaggedTensor):
                value = value.with_flat_values(_stringify(task, out, value.flat_values))
            else:
                value = tf.reshape(_stringify(task, out, tf.reshape(value, [-1])), tf.shape(value))
        return tf.strings.reduce_join(value, axis=-1, separator=ROW_JOINER)
    if isinstance(value, tf.RaggedTensor):
        raise ValueError(f"Task {task!r}: field {out!r} is a nested sequence (ragged, rank {rank}); map a feature of "
                         "rank 2 or less instead")
    if rank is not None and rank > 2:
        raise ValueError(f"Task {task!r}: field {out!r} has rank {rank}; only scalars, vectors and rank-2 rows "
                         "(joined per row) are supported")
    if value.dtype == tf.string:
        return value
    if value.dtype == tf.bool:
        return tf.where(value, tf.constant("true"), tf.constant("false"))
    if value.dtype.is_floating:
        return tf.strings.as_string(value, shortest=True)
    if value.dtype.is_integer:
        return tf.strings.as_string(value)
    raise ValueError(f"Task {task!r}: field {out!r} has dtype {value.dtype.name}, which cannot be turned into a string")


class TfdsFieldsDataSource(seqio.TfdsDataSource):
    """A seqio.TfdsDataSource that never downloads, maps fields and returns strings.

    sharding="examples" (default) reads the split in one global order on every host and keeps
    every num_shards-th example: exact, disjoint shards for any number of hosts and files.
    sharding="files" lets TFDS/seqio shard by files (less I/O; needs at least as many files as hosts).

    Splits: train reads ``split`` (the catalog's split or slice), validation reads ``validation_split`` (by
    default tfds_validation_split(split): the dataset's own validation split, or the complement of a validation
    slice trained on). A dataset without a validation split raises a ValueError naming its splits.
    """

    def __init__(
        self,
        task_name: str,
        tfds_name: str,
        split: str,
        field_map: Mapping[str, str] | Sequence[tuple[str, str]],
        data_dir: Optional[os.PathLike | str] = None,
        *,
        sharding: str = "examples",
        validation_split: Optional[str] = "default",
    ):
        if sharding not in ("examples", "files"):
            raise ValueError(f"Task {task_name!r}: sharding must be 'examples' or 'files', got {sharding!r}")
        fmap = tuple(field_map.items()) if isinstance(field_map, Mapping) else tuple(field_map)
        if not fmap:
            raise ValueError(f"Task {task_name!r}: empty field map for TFDS dataset {tfds_name!r}")
        tfds_splits = _splits(split, validation_split)
        super().__init__(
            tfds_name=tfds_name,
            tfds_data_dir=None if data_dir is None else os.fspath(data_dir),
            splits=tfds_splits,
            read_only=True,
        )
        self.task_name = task_name
        self.tfds_name = tfds_name
        self.tfds_splits = tfds_splits  # our split -> TFDS split or slice
        self.field_map = fmap
        self.data_dir = None if data_dir is None else Path(data_dir)
        self.sharding = sharding

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return self.sharding == "examples"

    def _how_to_get(self) -> str:
        name = self.tfds_name.split(":")[0]
        where = self.data_dir or "~/tensorflow_datasets"
        return (
            f"Prepare it on a machine with network access: `tfds build {name} --data_dir {where}` "
            "(datasets such as newsroom and story_cloze need a manual download first), then copy the directory "
            "here and pass it as tfds_data_dir (or drop the task with allow_missing_tasks)."
        )

    def _missing(self, detail: str) -> MissingDataError:
        where = self.data_dir or "the default TFDS data_dir"
        return MissingDataError(self.task_name, f"TFDS dataset {self.tfds_name!r} is not prepared in {where} ({detail})", self._how_to_get())

    def check_available(self) -> None:
        """Raises MissingDataError unless the dataset's prepared directory exists (no TFDS call: cheap enough
        for every task at registration)."""
        name, _, version = self.tfds_name.partition(":")
        root = self.data_dir or Path.home() / "tensorflow_datasets"
        directory = root / name / version if version else root / name
        if not directory.is_dir():
            raise self._missing(f"{directory} does not exist")

    def iter_examples(
        self,
        split: str = TRAIN,
        shuffle: bool = True,
        seed: Optional[int] = None,
        shard_info: Optional[seqio.ShardInfo] = None,
        num_epochs: Optional[int] = 1,
    ) -> Iterator[dict[str, Any]]:
        """get_dataset's examples as Python values: TFDS has no cheaper path than reading through tf.data."""
        dataset = self.get_dataset(split, shuffle=shuffle, seed=seed, shard_info=shard_info).repeat(num_epochs)
        return dataset_rows(dataset)

    def get_dataset(
        self,
        split: Optional[str] = TRAIN,
        shuffle: bool = True,
        seed: Optional[int] = None,
        shard_info: Optional[seqio.ShardInfo] = None,
        *,
        sequence_length: Optional[Mapping[str, int]] = None,
        use_cached: bool = False,
        num_epochs: Optional[int] = 1,
    ) -> tf.data.Dataset:
        split = split or TRAIN
        check_split(self.task_name, split, tuple(self._splits))
        seed = as_int_seed(seed)
        try:
            ds = super().get_dataset(
                split, shuffle=shuffle, seed=seed, shard_info=shard_info if self.sharding == "files" else None
            )
        except AssertionError as e:  # TFDS: "could not find data in <dir>"
            if "could not find data" in str(e) or "download_and_prepare" in str(e):
                raise self._missing(str(e).split(" Please")[0].rstrip(".")) from e
            raise
        except ValueError as e:  # TFDS: "Unknown split 'validation'. Should be one of [...]"
            if "Unknown split" in str(e):
                raise ValueError(f"Task {self.task_name!r}: TFDS dataset {self.tfds_name!r} has no split "
                                 f"{self.tfds_splits[split]!r} (for the {split} split): {e}") from e
            raise
        except Exception as e:  # unknown dataset/version with nothing on disk
            if type(e).__name__ in ("DatasetNotFoundError", "DatasetVariantBlockedError") or isinstance(e, FileNotFoundError):
                raise self._missing(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
            raise
        if self.sharding == "examples" and shard_info is not None and shard_info.num_shards > 1:
            ds = ds.shard(shard_info.num_shards, shard_info.index)
        # Fail now (not mid-iteration) if a mapped feature does not exist.
        spec = ds.element_spec
        for out, path in self.field_map:
            lookup_field(self.task_name, spec, out, path)
        task, fmap = self.task_name, self.field_map

        def to_strings(example):
            return {out: _stringify(task, out, lookup_field(task, example, out, path)) for out, path in fmap}

        return ds.map(to_strings, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _splits(split: str, validation_split: Optional[str]) -> dict[str, str]:
    if validation_split == "default":
        validation_split = tfds_validation_split(split)
    return {TRAIN: split, **({VALIDATION: validation_split} if validation_split else {})}


def tfds_source(
    task_name: str,
    tfds_name: str,
    split: str,
    field_map: Mapping[str, str] | Sequence[tuple[str, str]],
    data_dir: Optional[os.PathLike | str] = None,
    *,
    sharding: str = "examples",
    validation_split: Optional[str] = "default",
) -> TfdsFieldsDataSource:
    """validation_split: the TFDS split validation reads ("default": tfds_validation_split(split); None: no
    validation split)."""
    return TfdsFieldsDataSource(task_name, tfds_name, split, field_map, data_dir, sharding=sharding,
                                validation_split=validation_split)
