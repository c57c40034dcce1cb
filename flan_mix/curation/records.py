"""Instruction records: the one format every curation stage reads and writes.

A record is one JSON object per line (JSONL), Alpaca-style: `instruction`, `input`, `output`, plus `id`, `task`,
`ability`, and whatever a stage adds (scores, `skipped`, `error`). Stages append to their output and resume after
the last record written: `AppendOnlyWriter` tells a stage which ids are done, so a rerun after an interruption
continues where it stopped and a record that failed is written with its error rather than dropped.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterable

from flan_mix.data.instruction_records import (  # noqa: F401  (the format lives with the data side)
    FIELDS, REQUIRED_FIELDS, RecordError, iter_records, prompt_text, read_records)


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
