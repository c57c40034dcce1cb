"""CoT data: one ``question \\t answer \\t rationale`` TSV per dataset in a CoT data directory."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import tensorflow as tf

from flan_mix.data.data_errors import MalformedDataError, report_skipped
from flan_mix.data.flan.sources.base import IndexedDataSource, require_local_file

FLAN_REPO_URL = "https://github.com/google-research/FLAN"
COT_FIELDS = ("question", "answer", "rationale")


@dataclasses.dataclass(frozen=True)
class CotExample:
    question: str
    answer: str
    rationale: str


def read_cot_tsv(path: os.PathLike | str, *, skip_malformed: bool = False, task_name: str = "") -> list[CotExample]:
    """Parses a CoT TSV. A final newline is fine; any other empty line is malformed."""
    path = Path(path)
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    examples: list[CotExample] = []
    skipped: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        try:
            examples.append(_parse_cot_line(path, lineno, line))
        except MalformedDataError as e:
            if not skip_malformed:
                raise
            skipped.append(str(e))
    report_skipped(task_name or path.stem, path, skipped)
    if not examples:
        raise MalformedDataError(path, "line 1", "no examples (the file is empty)" + (f"; {len(skipped)} malformed lines skipped" if skipped else ""))
    return examples


def _parse_cot_line(path: Path, lineno: int, line: bytes) -> CotExample:
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedDataError(path, f"line {lineno}", f"invalid UTF-8 at byte {e.start} of the line") from None
    if not text.strip():
        raise MalformedDataError(path, f"line {lineno}", "empty line (expected question<TAB>answer<TAB>rationale)")
    fields = text.split("\t")
    if len(fields) != 3:
        raise MalformedDataError(
            path, f"line {lineno}", f"expected 3 tab-separated fields (question, answer, rationale), got {len(fields)}"
        )
    for name, value in zip(COT_FIELDS, fields):
        if not value.strip():
            raise MalformedDataError(path, f"line {lineno}", f"field {name!r} is empty")
    return CotExample(*fields)


class CotTsvDataSource(IndexedDataSource):
    """Examples {question, answer, rationale} from one CoT TSV file.

    Splits: the file is the CoT training data; validation is the held-out slice of base.holdout_split and train
    the rest of the file."""

    def __init__(self, task_name: str, cot_dir: Optional[os.PathLike | str], file_name: str, *, skip_malformed: bool = False):
        super().__init__(task_name, {f: tf.TensorSpec([], tf.string) for f in COT_FIELDS})
        self.cot_dir = None if cot_dir is None else Path(cot_dir)
        self.file_name = file_name
        self.skip_malformed = skip_malformed
        self._rows: Optional[list[CotExample]] = None

    @property
    def path(self) -> Optional[Path]:
        return None if self.cot_dir is None else self.cot_dir / self.file_name

    def _how_to_get(self) -> str:
        return (
            f"The CoT TSVs ship with {FLAN_REPO_URL} under flan/v2/cot_data/; put {self.file_name} in a directory "
            "and pass it as cot_dir (or drop the task with allow_missing_tasks)."
        )

    def check_available(self) -> None:
        require_local_file(self.task_name, self.cot_dir, "CoT data directory", "cot_dir",
                            lambda: (self.path, f"{self.file_name} is not in {self.cot_dir}"), self._how_to_get())

    def _prepare(self) -> int:
        if self._rows is None:
            self.check_available()
            self._rows = read_cot_tsv(self.path, skip_malformed=self.skip_malformed, task_name=self.task_name)
        return len(self._rows)

    def _example(self, position: int) -> dict[str, Any]:
        row = self._rows[position]
        return {"question": row.question, "answer": row.answer, "rationale": row.rationale}

    def _dataset_for_order(self, order_fn: Callable[[], np.ndarray], split: str = "train") -> tf.data.Dataset:
        # The file is small (tens of MB at most) and already parsed: slice tensors directly. Positions index the
        # whole file for either split (validation: base.holdout_split).
        rows, order = self._rows, order_fn()
        columns = {f: tf.constant([getattr(rows[i], f) for i in order], dtype=tf.string) for f in COT_FIELDS}
        return tf.data.Dataset.from_tensor_slices(columns)


def cot_tsv_source(task_name: str, cot_dir: Optional[os.PathLike | str], file_name: str, *, skip_malformed: bool = False) -> CotTsvDataSource:
    return CotTsvDataSource(task_name, cot_dir, file_name, skip_malformed=skip_malformed)
