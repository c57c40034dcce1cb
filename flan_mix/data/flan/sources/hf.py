"""Hugging Face datasets (P3): rows of a dataset split, fields mapped to strings. Optional: needs
`pip install datasets`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from flan_mix.data.data_errors import MalformedDataError, MissingDataError, OptionalDependencyError
from flan_mix.data.flan.sources.base import TRAIN, VALIDATION, IndexedDataSource, lookup_field


def _import_datasets(task_name: str, dataset: str):
    try:
        import datasets  # type: ignore
    except ImportError as e:
        raise OptionalDependencyError(
            f"Task {task_name!r} reads {dataset} through the Hugging Face `datasets` package, which is not installed. "
            "Install it (pip install datasets) to use the P3/T0 tasks, or drop them with allow_missing_tasks."
        ) from e
    return datasets


class HfDataSource(IndexedDataSource):
    """Rows of a Hugging Face dataset split, fields mapped to strings (P3: inputs/targets/answer choices).

    Paths in ``optional_lists`` are list columns that only some configs (or rows) have: they are always declared
    as string vectors and read as [] where absent. P3 is the case in point: a subset has an ``answer_choices``
    column only if its prompt defines answer choices, yet one catalog field map serves all 193 subsets.

    Splits: train reads the catalog's split (``split``), validation the dataset's own ``validation`` split
    (``validation_split``); each is loaded the first time it is read.
    """

    held_out_validation = False  # the dataset has its own validation split

    #: Optional list columns when the caller names none.
    DEFAULT_OPTIONAL_LISTS = frozenset({"answer_choices"})

    def __init__(
        self,
        task_name: str,
        dataset: str,
        config: Optional[str],
        split: str,
        field_map: Mapping[str, str] | Sequence[tuple[str, str]],
        cache_dir: Optional[os.PathLike | str] = None,
        *,
        load_fn: Optional[Callable[..., Any]] = None,
        optional_lists: Optional[Sequence[str] | frozenset[str]] = None,
        validation_split: str = VALIDATION,
    ):
        fmap = tuple(field_map.items()) if isinstance(field_map, Mapping) else tuple(field_map)
        if not fmap:
            raise ValueError(f"Task {task_name!r}: empty field map for HF dataset {dataset!r}")
        self.dataset = dataset
        self.config = config or None
        self.hf_split = split
        self.hf_splits = {TRAIN: split, VALIDATION: validation_split}
        self.field_map = fmap
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._load_fn = load_fn
        self.optional_lists = frozenset(self.DEFAULT_OPTIONAL_LISTS if optional_lists is None else optional_lists)
        self._rows: dict[str, Any] = {}
        self._vector_fields: Optional[set[str]] = None
        # The signature is known once the dataset's features are; vectors are declared lazily.
        super().__init__(task_name, {out: tf.TensorSpec([], tf.string) for out, _ in fmap})

    def _how_to_get(self, hf_split: Optional[str] = None) -> str:
        cfg = f", {self.config!r}" if self.config else ""
        cache = f", cache_dir={str(self.cache_dir)!r}" if self.cache_dir else ""
        return (
            "Download it on a machine with network access: python -c \"import datasets; "
            f"datasets.load_dataset({self.dataset!r}{cfg}, split={hf_split or self.hf_split!r}{cache})\", copy the cache here, "
            "pass it as hf_cache_dir and set HF_DATASETS_OFFLINE=1 (or drop the task with allow_missing_tasks)."
        )

    def check_available(self) -> None:
        if self._load_fn is None:
            _import_datasets(self.task_name, self.dataset)

    def _prepare(self) -> int:
        return self._load(TRAIN)

    def _split_positions(self, split: str) -> np.ndarray:
        return np.arange(self._load(split))

    def _load(self, split: str) -> int:
        """Loads the split's rows (once); returns how many there are."""
        if split not in self._rows:
            hf_split = self.hf_splits[split]
            load = self._load_fn
            if load is None:
                load = _import_datasets(self.task_name, self.dataset).load_dataset
            where = f"HF dataset {self.dataset!r} config {self.config!r}"
            try:
                rows = load(self.dataset, self.config, split=hf_split,
                            **({"cache_dir": os.fspath(self.cache_dir)} if self.cache_dir else {}))
            except (FileNotFoundError, ConnectionError, OSError) as e:
                raise MissingDataError(
                    self.task_name, f"{where} is not available ({type(e).__name__}: {e})",
                    self._how_to_get(hf_split),
                ) from e
            except Exception as e:
                if type(e).__name__ in ("DatasetNotFoundError", "DataFilesNotFoundError", "OfflineModeIsEnabled"):
                    raise MissingDataError(
                        self.task_name, f"{where} is not available ({type(e).__name__}: {e})",
                        self._how_to_get(hf_split),
                    ) from e
                if isinstance(e, (ValueError, KeyError)) and "split" in str(e).lower():
                    raise ValueError(f"Task {self.task_name!r}: {where} has no split {hf_split!r} for the {split} "
                                     f"split ({type(e).__name__}: {e}); this task cannot be evaluated on "
                                     f"{split}.") from e
                raise
            if len(rows) == 0:
                raise MissingDataError(self.task_name, f"{where} split {hf_split!r} is empty", self._how_to_get(hf_split))
            if self._vector_fields is None:
                first = rows[0]
                vectors = set()
                for out, path in self.field_map:
                    if path in self.optional_lists:  # a vector whether or not this config has the column
                        vectors.add(out)
                        continue
                    value = lookup_field(self.task_name, first, out, path)
                    if isinstance(value, (list, tuple)):
                        vectors.add(out)
                self._vector_fields = vectors
                self.output_signature = {out: tf.TensorSpec([None] if out in vectors else [], tf.string)
                                         for out, _ in self.field_map}
            self._rows[split] = rows
        return len(self._rows[split])

    def _examples_of(self, split: str, positions: np.ndarray) -> list[dict[str, Any]]:
        rows = self._rows[split]
        return [self._row_example(rows[int(p)], int(p)) for p in positions]

    def _example(self, position: int) -> dict[str, Any]:
        return self._row_example(self._rows[TRAIN][position], position)

    def _row_example(self, row: Mapping[str, Any], position: int) -> dict[str, Any]:
        out = {}
        for name, path in self.field_map:
            if path in self.optional_lists and not _has_path(row, path):
                out[name] = []
                continue
            value = lookup_field(self.task_name, row, name, path)
            if path in self.optional_lists and value is None:  # datasets fills a column some rows lack with None
                value = []
            if name in self._vector_fields:
                if not isinstance(value, (list, tuple)):
                    raise MalformedDataError(f"{self.dataset}/{self.config}", f"row {position}", f"field {path!r} is not a list")
                out[name] = [_to_str(self.dataset, position, path, v) for v in value]
            else:
                out[name] = _to_str(self.dataset, position, path, value)
        return out


def _has_path(row: Mapping[str, Any], path: str) -> bool:
    value: Any = row
    for part in path.split("/"):
        if not isinstance(value, Mapping) or part not in value:
            return False
        value = value[part]
    return True


def _to_str(where: str, position: int, path: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return str(value)
    raise MalformedDataError(where, f"row {position}", f"field {path!r} has type {type(value).__name__}, not a string or number")


def hf_source(
    task_name: str,
    dataset: str,
    config: Optional[str],
    split: str,
    field_map: Mapping[str, str] | Sequence[tuple[str, str]],
    cache_dir: Optional[os.PathLike | str] = None,
    *,
    load_fn: Optional[Callable[..., Any]] = None,
    optional_lists: Optional[Sequence[str] | frozenset[str]] = None,
    validation_split: str = VALIDATION,
) -> HfDataSource:
    """``load_fn`` replaces datasets.load_dataset (tests, or a custom offline reader); ``optional_lists``,
    ``validation_split``: see :class:`HfDataSource`."""
    return HfDataSource(task_name, dataset, config, split, field_map, cache_dir, load_fn=load_fn,
                        optional_lists=optional_lists, validation_split=validation_split)
