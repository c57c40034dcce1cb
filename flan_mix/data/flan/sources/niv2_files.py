"""Reading natural-instructions (NIv2) task files: tasks/taskNNN_*.json with Definition, Positive Examples and
Instances (each with a list of outputs).

A task file can hold thousands of instances; index_niv2_file records each instance's byte range once, so a
source can read any instance later without keeping the file in memory. Malformed files raise MalformedDataError
naming the file, the field or instance, and the problem.
"""
from __future__ import annotations

import array
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

from flan_mix.data.data_errors import MalformedDataError, report_skipped


@dataclasses.dataclass(frozen=True)
class NIv2Example:
    input: str
    output: str
    explanation: str


@dataclasses.dataclass(frozen=True)
class NIv2Instance:
    id: str
    input: str
    outputs: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class NIv2Task:
    name: str
    path: Path
    definition: str
    positive_examples: tuple[NIv2Example, ...]
    instances: tuple[NIv2Instance, ...]


_WS = re.compile(r"[ \t\n\r]*")


def _json_error(path: Path, e: json.JSONDecodeError) -> MalformedDataError:
    return MalformedDataError(path, f"line {e.lineno}, column {e.colno}", f"invalid JSON: {e.msg}")


def _expect_str(path: Path, field: str, value: Any, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise MalformedDataError(path, f"field {field}", f"expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise MalformedDataError(path, f"field {field}", "is empty")
    return value


def _parse_definition(path: Path, value: Any) -> str:
    if isinstance(value, str):
        parts = [value]
    elif isinstance(value, list) and value:
        parts = [_expect_str(path, f"Definition[{i}]", v) for i, v in enumerate(value)]
    else:
        raise MalformedDataError(path, "field Definition", "expected a non-empty list of strings")
    definition = "\n".join(parts)
    if not definition.strip():
        raise MalformedDataError(path, "field Definition", "is empty")
    return definition


def _parse_positive_examples(path: Path, value: Any) -> tuple[NIv2Example, ...]:
    if not isinstance(value, list):
        raise MalformedDataError(path, "field Positive Examples", f"expected a list, got {type(value).__name__}")
    out = []
    for i, ex in enumerate(value):
        where = f"Positive Examples[{i}]"
        if not isinstance(ex, dict):
            raise MalformedDataError(path, f"field {where}", f"expected an object, got {type(ex).__name__}")
        for key in ("input", "output"):
            if key not in ex:
                raise MalformedDataError(path, f"field {where}", f"missing key {key!r}")
        out.append(
            NIv2Example(
                input=_expect_str(path, f"{where}.input", ex["input"]),
                output=_expect_str(path, f"{where}.output", ex["output"]),
                explanation=_expect_str(path, f"{where}.explanation", ex.get("explanation", ""), allow_empty=True),
            )
        )
    return tuple(out)


def parse_instance(path: Path, position: int, value: Any, task_name: str) -> NIv2Instance:
    where = f"Instances[{position}]"
    if not isinstance(value, dict):
        raise MalformedDataError(path, f"field {where}", f"expected an object, got {type(value).__name__}")
    if "input" not in value:
        raise MalformedDataError(path, f"field {where}", "missing key 'input'")
    if "output" not in value:
        raise MalformedDataError(path, f"field {where}", "missing key 'output'")
    outputs = value["output"]
    if not isinstance(outputs, list) or not outputs:
        raise MalformedDataError(path, f"field {where}.output", f"expected a non-empty list of strings, got {outputs!r}"[:300])
    outs = tuple(_expect_str(path, f"{where}.output[{j}]", o, allow_empty=True) for j, o in enumerate(outputs))
    if not outs[0].strip():
        raise MalformedDataError(path, f"field {where}.output[0]", "the first (target) output is empty")
    ex_id = value.get("id", f"{task_name}-{position}")
    return NIv2Instance(
        id=_expect_str(path, f"{where}.id", ex_id),
        input=_expect_str(path, f"{where}.input", value["input"], allow_empty=True),
        outputs=outs,
    )


@dataclasses.dataclass
class NIv2Index:
    """What a NIv2 source keeps in memory: task-level text and byte spans of the instances."""

    definition: str
    positive_examples: tuple[NIv2Example, ...]
    starts: array.array
    ends: array.array
    file_size: int
    file_mtime_ns: int
    skipped: int


def index_niv2_file(path: Path, task_name: str, skip_malformed: bool) -> NIv2Index:
    """Validates a task file and records the byte span of every instance.

    The file is scanned once; only the spans (16 bytes per instance), the definition and the
    positive examples stay in memory. Instances are re-read from disk when iterated, so memory
    stays bounded when hundreds of NIv2 tasks stream side by side.
    """
    stat = path.stat()
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise MalformedDataError(path, f"line {line}", f"invalid UTF-8 (byte offset {e.start})") from None
    # Latin-1 maps every byte to one character, so character offsets below are byte offsets; all
    # JSON structure is ASCII, so scanning this text finds exactly the spans of the UTF-8 file.
    text = raw.decode("latin-1")
    dec = json.JSONDecoder()

    def utf8_value(start: int, end: int) -> Any:
        return json.loads(raw[start:end].decode("utf-8"))

    try:
        i = _WS.match(text, 0).end()
        if i >= len(text) or text[i] != "{":
            raise MalformedDataError(path, "line 1", "expected a JSON object at the top level")
        i = _WS.match(text, i + 1).end()
        values: dict[str, tuple[int, int]] = {}
        starts, ends = array.array("q"), array.array("q")
        skipped: list[str] = []
        while text[i] != "}":
            key, i = dec.raw_decode(text, i)
            if not isinstance(key, str):
                raise json.JSONDecodeError("Expecting property name", text, i)
            i = _WS.match(text, i).end()
            if text[i] != ":":
                raise json.JSONDecodeError("Expecting ':' delimiter", text, i)
            i = _WS.match(text, i + 1).end()
            if key in values:
                raise MalformedDataError(path, f"field {key}", "appears twice")
            if key == "Instances" and text[i] == "[":
                start_of_array = i
                i = _WS.match(text, i + 1).end()
                position = 0
                while text[i] != "]":
                    start = i
                    obj, i = dec.raw_decode(text, i)
                    try:
                        # Structure check on the latin-1 view (types and emptiness are the same).
                        parse_instance(path, position, obj, task_name)
                        starts.append(start)
                        ends.append(i)
                    except MalformedDataError as e:
                        if not skip_malformed:
                            raise
                        skipped.append(str(e))
                    position += 1
                    i = _WS.match(text, i).end()
                    if text[i] == ",":
                        i = _WS.match(text, i + 1).end()
                    elif text[i] != "]":
                        raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
                i += 1
                values[key] = (start_of_array, i)
            else:
                start = i
                _, i = dec.raw_decode(text, i)
                values[key] = (start, i)
            i = _WS.match(text, i).end()
            if text[i] == ",":
                i = _WS.match(text, i + 1).end()
            elif text[i] != "}":
                raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
        rest = _WS.match(text, i + 1).end()
        if rest != len(text):
            raise json.JSONDecodeError("Extra data", text, rest)
    except json.JSONDecodeError as e:
        raise _json_error(path, e) from None
    except IndexError:
        raise MalformedDataError(path, f"line {text.count(chr(10)) + 1}", "invalid JSON: unexpected end of file") from None

    for key in ("Definition", "Positive Examples", "Instances"):
        if key not in values:
            raise MalformedDataError(path, f"field {key}", "is missing")
    if text[values["Instances"][0]] != "[":
        raise MalformedDataError(path, "field Instances", "expected a list of instances")
    if not starts:
        detail = f" ({len(skipped)} malformed skipped)" if skipped else ""
        raise MalformedDataError(path, "field Instances", "has no instances" + detail)
    definition = _parse_definition(path, utf8_value(*values["Definition"]))
    positives = _parse_positive_examples(path, utf8_value(*values["Positive Examples"]))
    report_skipped(task_name, path, skipped)
    return NIv2Index(definition, positives, starts, ends, stat.st_size, stat.st_mtime_ns, len(skipped))


def read_niv2_task(path: os.PathLike | str, *, skip_malformed: bool = False) -> NIv2Task:
    """Reads and validates a whole NIv2 task file into memory."""
    path = Path(path)
    name = path.name[: -len(".json")] if path.name.endswith(".json") else path.name
    index = index_niv2_file(path, name, skip_malformed)
    raw = path.read_bytes()
    instances = tuple(
        parse_instance(path, k, json.loads(raw[s:e].decode("utf-8")), name) for k, (s, e) in enumerate(zip(index.starts, index.ends))
    )
    return NIv2Task(name, path, index.definition, index.positive_examples, instances)


def find_niv2_tasks_dir(niv2_dir: os.PathLike | str) -> Path:
    """Accepts a natural-instructions clone (with tasks/) or its tasks/ directory itself."""
    d = Path(niv2_dir)
    return d / "tasks" if (d / "tasks").is_dir() else d
