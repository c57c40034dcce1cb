"""NIv2: one task file of a local natural-instructions clone (tasks/taskNNN_*.json) as a source. The files are read
by flan_mix.data.flan.sources.niv2_files.

Fields: id, definition, input, output (the first of the instance's outputs), all_outputs, and the task's
positive examples as pos_inputs / pos_outputs / pos_explanations (string vectors).

Splits: a task file has no validation split, so validation is the held-out slice of base.holdout_split over all
the file's instances and train the rest; max_instances caps train only (its first instances in file order).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from flan_mix.data.data_errors import MalformedDataError
from flan_mix.data.flan.sources.base import TRAIN, VALIDATION, IndexedDataSource, require_local_file
from flan_mix.data.flan.sources.niv2_files import NIv2Index, find_niv2_tasks_dir, index_niv2_file, parse_instance

NIV2_REPO_URL = "https://github.com/allenai/natural-instructions"
NIV2_FIELDS = ("id", "definition", "input", "output", "all_outputs", "pos_inputs", "pos_outputs", "pos_explanations")
_NIV2_VECTOR_FIELDS = ("all_outputs", "pos_inputs", "pos_outputs", "pos_explanations")


class NIv2DataSource(IndexedDataSource):
    """Examples of one NIv2 task: the instance plus the task definition and positive examples."""

    lazy = True  # the file is indexed when iteration starts, not when the mixture is built

    def __init__(
        self,
        task_name: str,
        niv2_dir: Optional[os.PathLike | str],
        task_file: Optional[str] = None,
        *,
        max_instances: Optional[int] = None,
        skip_malformed: bool = False,
    ):
        signature = {f: tf.TensorSpec([None] if f in _NIV2_VECTOR_FIELDS else [], tf.string) for f in NIV2_FIELDS}
        super().__init__(task_name, signature)
        self.niv2_dir = None if niv2_dir is None else Path(niv2_dir)
        self.task_file = task_file or f"{task_name}.json"
        if max_instances is not None and max_instances <= 0:
            raise ValueError(f"Task {task_name!r}: max_instances must be positive, got {max_instances}")
        self.max_instances = max_instances
        self.skip_malformed = skip_malformed
        self._index: Optional[NIv2Index] = None
        self._path: Optional[Path] = None

    @property
    def path(self) -> Optional[Path]:
        if self._path is None and self.niv2_dir is not None:
            self._path = find_niv2_tasks_dir(self.niv2_dir) / self.task_file
        return self._path

    def _how_to_get(self) -> str:
        return (
            f"Clone {NIV2_REPO_URL} (git clone --depth 1 {NIV2_REPO_URL}) and pass the clone as niv2_dir "
            "(or drop the task with allow_missing_tasks)."
        )

    def check_available(self) -> None:
        require_local_file(self.task_name, self.niv2_dir, "natural-instructions directory", "niv2_dir",
                            lambda: (self.path, f"task file {self.path} does not exist"), self._how_to_get())

    def validate(self) -> int:
        """Reads and validates the task file now; returns the number of instances used (train + validation)."""
        self.check_available()
        return len(self._split_positions(TRAIN)) + len(self._split_positions(VALIDATION))

    def _prepare(self) -> int:
        if self._index is None:
            self.check_available()
            self._index = index_niv2_file(self.path, self.task_name, self.skip_malformed)
        return len(self._index.starts)

    def _split_positions(self, split: str) -> np.ndarray:
        positions = super()._split_positions(split)
        if split == TRAIN and self.max_instances is not None:
            positions = positions[:self.max_instances]
        return positions

    def _example(self, position: int) -> dict[str, Any]:
        return self._examples(np.array([position]))[0]

    def _examples(self, positions: np.ndarray) -> list[dict[str, Any]]:
        index = self._index
        pos = index.positive_examples
        shared = {
            "definition": index.definition,
            "pos_inputs": [p.input for p in pos],
            "pos_outputs": [p.output for p in pos],
            "pos_explanations": [p.explanation for p in pos],
        }
        out = []
        # One open per chunk keeps file handles few when many NIv2 tasks stream side by side.
        with open(self.path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_size != index.file_size or st.st_mtime_ns != index.file_mtime_ns:
                raise MalformedDataError(self.path, "file", "changed on disk after it was indexed; restart the input pipeline")
            for position in positions:
                position = int(position)
                start, end = index.starts[position], index.ends[position]
                f.seek(start)
                blob = f.read(end - start)
                inst = parse_instance(self.path, position, json.loads(blob.decode("utf-8")), self.task_name)
                out.append({"id": inst.id, "input": inst.input, "output": inst.outputs[0], "all_outputs": list(inst.outputs), **shared})
        return out


def niv2_source(
    task_name: str,
    niv2_dir: Optional[os.PathLike | str],
    task_file: Optional[str] = None,
    *,
    max_instances: Optional[int] = None,
    skip_malformed: bool = False,
) -> NIv2DataSource:
    return NIv2DataSource(task_name, niv2_dir, task_file, max_instances=max_instances, skip_malformed=skip_malformed)
