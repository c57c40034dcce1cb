"""Instruction records: the one format every curation stage reads and writes.

A record is one JSON object per line (JSONL), Alpaca-style: `instruction`, `input`, `output`, plus `id`, `task`,
`ability`, and whatever a stage adds (scores, `skipped`, `error`). Stages append to their output and resume after
the last record written: `AppendOnlyWriter` tells a stage which ids are done, so a rerun after an interruption
continues where it stopped and a record that failed is written with its error rather than dropped.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Iterator

from flan_mix.data.data_errors import DataError

REQUIRED_FIELDS = ("id", "instruction", "input", "output")
FIELDS = REQUIRED_FIELDS + ("task", "ability")


class RecordError(DataError, ValueError):
    """A malformed instruction-record file (names the file, line and field)."""


def prompt_text(record: dict) -> str:
    """The text the model reads: the instruction, then the input (when there is one) after a blank line."""
    return record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")


def read_records(path: str) -> list[dict]:
    """The records of a JSONL file, checked: every line an object with the REQUIRED_FIELDS (strings), ids unique."""
    return list(iter_records(path))


def iter_records(path: str) -> Iterator[dict]:
    if not os.path.exists(path):
        raise RecordError(f"{path}: no such file. Write one with `python run.py curate export --task=NAME "
                          f"--output={path}`.")
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(f"{path}:{line_no}: not valid JSON ({e.msg} at column {e.colno}); each line "
                                  "must be one JSON object.") from None
            if not isinstance(rec, dict):
                raise RecordError(f"{path}:{line_no}: expected a JSON object, got {type(rec).__name__}.")
            for field in REQUIRED_FIELDS:
                if not isinstance(rec.get(field), str):
                    got = "missing" if field not in rec else f"a {type(rec[field]).__name__}"
                    raise RecordError(f"{path}:{line_no}: field '{field}' must be a string ({got}); records need "
                                      f"{', '.join(REQUIRED_FIELDS)}.")
            if rec["id"] in seen:
                raise RecordError(f"{path}:{line_no}: duplicate id {rec['id']!r}; ids must be unique in a file.")
            seen.add(rec["id"])
            yield rec


class AppendOnlyWriter:
    """Appends records to a JSONL file, one flushed line each; `done` holds the ids already in the file.

    A line cut short by a crash (no trailing newline) is dropped on open, so the file stays valid and that
    record is redone.
    """

    def __init__(self, path: str):
        self.path = path
        self.done: set[str] = set()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if os.path.exists(path):
            with open(path, "rb") as f:
                data = f.read()
            complete = data[:data.rfind(b"\n") + 1]
            if len(complete) != len(data):
                with open(path, "wb") as f:
                    f.write(complete)
            for line_no, line in enumerate(complete.decode("utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        self.done.add(json.loads(line)["id"])
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise RecordError(f"{path}:{line_no}: cannot resume: the line is not a record with an "
                                          "'id'. Move the file away or fix that line.") from None
        self._file = open(path, "a", encoding="utf-8")

    def pending(self, records: Iterable[dict]) -> list[dict]:
        """The records whose id is not written yet, in order."""
        return [r for r in records if r["id"] not in self.done]

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        self.done.add(record["id"])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "AppendOnlyWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
