"""The instruction-record format (JSONL, Alpaca-style) as data: reading and checking a file, and the prompt text
a record stands for. Curation stages write these files (flan_mix.curation.records); flan_mix.data.jsonl_task
trains on them.
"""
from __future__ import annotations

import json
import os
from typing import Iterator

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
    if not os.path.isfile(path):
        raise RecordError(f"{path}: no such file. Write one with `python run.py curate export --task=NAME "
                          f"--output={path}` or another curation stage.")
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
