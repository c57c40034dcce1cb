"""The Flan 2022 task catalog: ``configs/catalog/flan2022_tasks.csv`` as typed records.

One catalog row is one *task*: a (dataset, task category) pair, the unit the Flan 2022 paper counts.
Input-inverted variants of a task (the released CSV lists them as separate rows) are kept on the
parent row in ``inversions``; they are template variants, not tasks.

This module is pure Python (csv only) so that it loads in milliseconds and can be imported where
TensorFlow is not installed. The data-source side lives in ``flan_mix.data.flan.sources``.

Usage::

    from flan_mix.data.flan import catalog
    cat = catalog.load_catalog()
    cat.by_submixture("cot")          # the 9 CoT task records
    print(cat.format_counts_table())  # paper counts next to what the catalog holds

``python -m flan_mix.data.flan.catalog`` prints the counts table.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional, Sequence

from flan_mix.data.data_errors import DataError
from flan_mix.resources import resource_path

# --------------------------------------------------------------------------------------------
# Vocabulary.

#: Submixtures of the Flan 2022 mixture (the mixture rates are defined per submixture).
SUBMIXTURES: tuple[str, ...] = ("flan2021", "t0_sf", "niv2", "cot", "dialog")

#: Groups the paper counts tasks by. Muffin = flan2021 + dialog (+ program synthesis).
PAPER_GROUPS: tuple[str, ...] = ("muffin", "t0_sf", "niv2", "cot")

#: Task counts reported for the Flan 2022 collection (Chung et al. 2022; Longpre et al. 2023).
PAPER_TASK_COUNTS: Mapping[str, int] = {"muffin": 80, "t0_sf": 193, "niv2": 1554, "cot": 9}
PAPER_TOTAL_TASKS: int = 1836

#: Ability labels (DoIT taxonomy) used for ability-growth analysis.
ABILITIES: tuple[str, ...] = (
    "STEM",
    "humanities",
    "code generation",
    "creative writing",
    "multilingual",
    "dialogue understanding",
    "role-play",
    "logical reasoning",
    "CoT math",
    "ethics",
)

#: Loader kinds and what their spec fields mean.
#:   tfds:        name = "<dataset>[/<config>]:<version>", split = TFDS split/slice, field_map required
#:   hf:          name = HF dataset id, config = subset, split = split, field_map required
#:   niv2:        name = task file name ("taskNNN_*.json") inside a natural-instructions clone
#:   cot_tsv:     name = TSV file name ("<dataset>_train.tsv") inside a CoT data directory
#:   unavailable: the data was never released; the task must be disabled
LOADER_KINDS: tuple[str, ...] = ("tfds", "hf", "niv2", "cot_tsv", "unavailable")

#: Where an example count comes from.
#:   published:   a split size printed in a public source (named in count_note)
#:   derived:     arithmetic on a published size (e.g. FLAN's train[:-200] hold-out)
#:   estimate:    not verified; count_note says how it was estimated
#:   unavailable: no data (disabled task); the count is 0
COUNT_SOURCES: tuple[str, ...] = ("published", "derived", "estimate", "unavailable")

#: Column order of the catalog CSV. ``build_catalog.py`` writes exactly these columns.
COLUMNS: tuple[str, ...] = (
    "name",
    "submixture",
    "paper_group",
    "source",
    "dataset",
    "csv_dataset",
    "category",
    "inversions",
    "languages",
    "template_family",
    "ability",
    "loader",
    "loader_name",
    "loader_config",
    "loader_split",
    "field_map",
    "example_count",
    "count_source",
    "count_note",
    "enabled",
    "disabled_reason",
    "in_paper_count",
    "notes",
)

_LIST_SEP = ";"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_NIV2_FILE_RE = re.compile(r"^task\d+_[^/\\]+\.json$")
_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_PATH_RE = re.compile(r"^[A-Za-z0-9_\-.]+(/[A-Za-z0-9_\-.]+)*$")

DEFAULT_CATALOG_PATH = resource_path("configs/catalog/flan2022_tasks.csv")
_CATALOG_ENV = "FLAN_MIX_CATALOG"


class CatalogError(DataError, ValueError):
    """A malformed catalog file. The message names the file, the line, the task and the field."""


# --------------------------------------------------------------------------------------------
# Records.


@dataclasses.dataclass(frozen=True)
class LoaderSpec:
    """How to read one task's raw examples. See ``LOADER_KINDS`` for the meaning per kind."""

    kind: str
    name: str
    config: str = ""
    split: str = ""
    #: (output field, input path) pairs; input paths use "/" for nested TFDS features.
    field_map: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class TaskRecord:
    """One task of the Flan 2022 collection."""

    name: str
    submixture: str
    paper_group: str
    source: str  # the "Source" column of the released CSV (FLAN, FLAN/T0, T0, NIv2, CoT, ...)
    dataset: str
    csv_dataset: str  # the "Dataset" column exactly as released (it is truncated for T0 rows)
    category: str
    inversions: tuple[str, ...]
    languages: tuple[str, ...]
    template_family: str
    ability: str
    loader: LoaderSpec
    example_count: int
    count_source: str
    count_note: str
    enabled: bool
    disabled_reason: str
    in_paper_count: bool
    notes: str

    @property
    def count_is_estimate(self) -> bool:
        return self.count_source == "estimate"


# --------------------------------------------------------------------------------------------
# Parsing.


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in value.split(_LIST_SEP) if x.strip())


def parse_field_map(value: str) -> tuple[tuple[str, str], ...]:
    """Parses ``"out=in/path;out2=in2"``. Raises ValueError with the offending item."""
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in _split_list(value):
        if "=" not in item:
            raise ValueError(f"item {item!r} is not of the form output=input")
        out, _, src = (s.strip() for s in item.partition("="))
        if not _FIELD_RE.match(out):
            raise ValueError(f"output field {out!r} is not a valid field name")
        if not _PATH_RE.match(src):
            raise ValueError(f"input path {src!r} (for output {out!r}) is not a valid feature path")
        if out in seen:
            raise ValueError(f"output field {out!r} is mapped twice")
        seen.add(out)
        pairs.append((out, src))
    return tuple(pairs)


def format_field_map(pairs: Iterable[tuple[str, str]]) -> str:
    return _LIST_SEP.join(f"{out}={src}" for out, src in pairs)


def _parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v == "true":
        return True
    if v == "false":
        return False
    raise ValueError(f"expected 'true' or 'false', got {value!r}")


def _parse_count(value: str) -> int:
    v = value.strip()
    if not v.isdigit():
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return int(v)


def _one(enum: Sequence[str]):
    def check(value: str) -> str:
        if value not in enum:
            raise ValueError(f"{value!r} is not one of {', '.join(enum)}")
        return value

    return check


def _record_from_row(row: Mapping[str, str]) -> TaskRecord:
    """Builds a record; raises (field, message) pairs via _FieldError."""

    def get(field: str, parse=None):
        raw = row[field]
        if parse is None:
            return raw.strip()
        try:
            return parse(raw)
        except ValueError as e:
            raise _FieldError(field, str(e)) from None

    name = get("name")
    if not name:
        raise _FieldError("name", "is empty")
    if not _NAME_RE.match(name):
        raise _FieldError("name", f"{name!r} has characters outside [A-Za-z0-9_.-]")

    kind = get("loader", _one(LOADER_KINDS))
    try:
        fmap = parse_field_map(row["field_map"])
    except ValueError as e:
        raise _FieldError("field_map", str(e)) from None
    spec = LoaderSpec(
        kind=kind,
        name=get("loader_name"),
        config=get("loader_config"),
        split=get("loader_split"),
        field_map=fmap,
    )
    _check_loader(spec)

    record = TaskRecord(
        name=name,
        submixture=get("submixture", _one(SUBMIXTURES)),
        paper_group=get("paper_group", _one(PAPER_GROUPS)),
        source=get("source"),
        dataset=get("dataset"),
        csv_dataset=get("csv_dataset"),
        category=get("category"),
        inversions=_split_list(row["inversions"]),
        languages=_split_list(row["languages"]),
        template_family=get("template_family"),
        ability=get("ability", _one(ABILITIES)),
        loader=spec,
        example_count=get("example_count", _parse_count),
        count_source=get("count_source", _one(COUNT_SOURCES)),
        count_note=get("count_note"),
        enabled=get("enabled", _parse_bool),
        disabled_reason=get("disabled_reason"),
        in_paper_count=get("in_paper_count", _parse_bool),
        notes=get("notes"),
    )
    for field in ("dataset", "category", "template_family", "source"):
        if not getattr(record, field):
            raise _FieldError(field, "is empty")
    if not record.languages:
        raise _FieldError("languages", "is empty")
    if record.count_source in ("estimate", "derived", "published") and not record.count_note:
        raise _FieldError("count_note", f"is empty; a {record.count_source!r} count must say where it comes from")
    if record.enabled and record.disabled_reason:
        raise _FieldError("disabled_reason", "is set on an enabled task")
    if not record.enabled and not record.disabled_reason:
        raise _FieldError("disabled_reason", "is empty on a disabled task; say why it is disabled")
    if record.enabled and spec.kind == "unavailable":
        raise _FieldError("enabled", "is true but the loader is 'unavailable'")
    if record.enabled and record.example_count == 0:
        raise _FieldError("example_count", "is 0 on an enabled task")
    return record


def _check_loader(spec: LoaderSpec) -> None:
    if spec.kind == "unavailable":
        return
    if not spec.name:
        raise _FieldError("loader_name", f"is empty for a {spec.kind!r} loader")
    if spec.kind == "tfds":
        if ":" not in spec.name:
            raise _FieldError("loader_name", f"TFDS name {spec.name!r} has no ':<version>'")
        if not spec.split:
            raise _FieldError("loader_split", "is empty for a 'tfds' loader")
        if not spec.field_map:
            raise _FieldError("field_map", "is empty for a 'tfds' loader")
    elif spec.kind == "hf":
        if not spec.split:
            raise _FieldError("loader_split", "is empty for an 'hf' loader")
        if not spec.field_map:
            raise _FieldError("field_map", "is empty for an 'hf' loader")
    elif spec.kind == "niv2":
        if not _NIV2_FILE_RE.match(spec.name):
            raise _FieldError("loader_name", f"{spec.name!r} is not a NIv2 task file name (taskNNN_*.json)")
    elif spec.kind == "cot_tsv":
        if not spec.name.endswith(".tsv") or "/" in spec.name:
            raise _FieldError("loader_name", f"{spec.name!r} is not a TSV file name")


class _FieldError(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(field, message)
        self.field = field
        self.message = message


# --------------------------------------------------------------------------------------------
# The catalog.


@dataclasses.dataclass(frozen=True)
class CountRow:
    """One line of the counts table."""

    group: str
    paper: Optional[int]
    listed: int
    counted: int
    enabled: int
    disabled: int
    estimated_counts: int
    examples_enabled: int

    @property
    def matches_paper(self) -> Optional[bool]:
        return None if self.paper is None else self.paper == self.counted


class Catalog:
    """An immutable, ordered collection of task records."""

    def __init__(self, tasks: Sequence[TaskRecord], path: Optional[Path] = None):
        self._tasks = tuple(tasks)
        self._by_name = {t.name: t for t in self._tasks}
        self.path = path

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[TaskRecord]:
        return iter(self._tasks)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    @property
    def tasks(self) -> tuple[TaskRecord, ...]:
        return self._tasks

    def get(self, name: str) -> TaskRecord:
        try:
            return self._by_name[name]
        except KeyError:
            close = [n for n in self._by_name if name.lower() in n.lower()][:5]
            hint = f" Close matches: {', '.join(close)}." if close else ""
            raise KeyError(f"No task named {name!r} in the catalog {self.path}.{hint}") from None

    def by_submixture(self, submixture: str, *, enabled_only: bool = False) -> tuple[TaskRecord, ...]:
        if submixture not in SUBMIXTURES:
            raise ValueError(f"Unknown submixture {submixture!r}; expected one of {', '.join(SUBMIXTURES)}")
        return tuple(t for t in self._tasks if t.submixture == submixture and (t.enabled or not enabled_only))

    def by_paper_group(self, group: str, *, counted_only: bool = True) -> tuple[TaskRecord, ...]:
        if group not in PAPER_GROUPS:
            raise ValueError(f"Unknown paper group {group!r}; expected one of {', '.join(PAPER_GROUPS)}")
        return tuple(t for t in self._tasks if t.paper_group == group and (t.in_paper_count or not counted_only))

    def enabled(self) -> tuple[TaskRecord, ...]:
        return tuple(t for t in self._tasks if t.enabled)

    def paper_counts(self) -> dict[str, int]:
        """Tasks counted per paper group, plus 'total'. Compare with PAPER_TASK_COUNTS."""
        counts = {g: len(self.by_paper_group(g)) for g in PAPER_GROUPS}
        counts["total"] = sum(counts.values())
        return counts

    def counts_table(self) -> list[CountRow]:
        """Rows for every paper group, every submixture and the total."""
        rows: list[CountRow] = []

        def row(label: str, tasks: Sequence[TaskRecord], paper: Optional[int]) -> CountRow:
            return CountRow(
                group=label,
                paper=paper,
                listed=len(tasks),
                counted=sum(t.in_paper_count for t in tasks),
                enabled=sum(t.enabled for t in tasks),
                disabled=sum(not t.enabled for t in tasks),
                estimated_counts=sum(t.count_is_estimate for t in tasks),
                examples_enabled=sum(t.example_count for t in tasks if t.enabled),
            )

        for g in PAPER_GROUPS:
            rows.append(row(f"paper:{g}", [t for t in self._tasks if t.paper_group == g], PAPER_TASK_COUNTS[g]))
        rows.append(row("paper:total", self._tasks, PAPER_TOTAL_TASKS))
        for s in SUBMIXTURES:
            rows.append(row(f"submix:{s}", [t for t in self._tasks if t.submixture == s], None))
        return rows

    def format_counts_table(self) -> str:
        header = ("group", "paper", "counted", "listed", "enabled", "disabled", "est.counts", "examples(enabled)", "")
        lines = [header]
        for r in self.counts_table():
            ok = "" if r.matches_paper is None else ("ok" if r.matches_paper else "MISMATCH")
            lines.append(
                (
                    r.group,
                    "" if r.paper is None else str(r.paper),
                    str(r.counted),
                    str(r.listed),
                    str(r.enabled),
                    str(r.disabled),
                    str(r.estimated_counts),
                    f"{r.examples_enabled:,}",
                    ok,
                )
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        out = []
        for i, line in enumerate(lines):
            out.append("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(line, widths))).rstrip())
            if i == 0:
                out.append("  ".join("-" * w for w in widths))
        return "\n".join(out)

    def check_paper_counts(self) -> None:
        """Raises CatalogError if the counted tasks differ from the paper's figures."""
        counts = self.paper_counts()
        bad = [f"{g}: catalog {counts[g]} vs paper {PAPER_TASK_COUNTS[g]}" for g in PAPER_GROUPS if counts[g] != PAPER_TASK_COUNTS[g]]
        if counts["total"] != PAPER_TOTAL_TASKS:
            bad.append(f"total: catalog {counts['total']} vs paper {PAPER_TOTAL_TASKS}")
        if bad:
            raise CatalogError(f"{self.path}: task counts differ from the paper: " + "; ".join(bad))


def resolve_catalog_path(path: Optional[os.PathLike | str] = None) -> Path:
    if path is not None:
        return Path(path)
    env = os.environ.get(_CATALOG_ENV)
    return Path(env) if env else DEFAULT_CATALOG_PATH


def load_catalog(path: Optional[os.PathLike | str] = None) -> Catalog:
    """Reads and validates a catalog CSV (default: configs/catalog/flan2022_tasks.csv).

    The default can be overridden with the FLAN_MIX_CATALOG environment variable.
    Raises CatalogError naming the file, line, task and field of the first problem found.
    """
    p = resolve_catalog_path(path)
    if not p.is_file():
        raise CatalogError(
            f"Catalog file {p} does not exist. It is generated by configs/catalog/build_catalog.py "
            f"and committed to the repository; pass path=... or set {_CATALOG_ENV} to use another file."
        )
    with open(p, newline="", encoding="utf-8") as f:
        text = f.read()
    return parse_catalog(text, path=p)


def parse_catalog(text: str, path: Optional[os.PathLike | str] = None) -> Catalog:
    """Parses catalog CSV text. ``path`` is only used in error messages."""
    where = str(path) if path is not None else "<catalog>"
    reader = csv.DictReader(text.splitlines(keepends=True), strict=True)
    header = tuple(reader.fieldnames or ())
    if header != COLUMNS:
        missing = [c for c in COLUMNS if c not in header]
        extra = [c for c in header if c not in COLUMNS]
        detail = []
        if missing:
            detail.append(f"missing columns: {', '.join(missing)}")
        if extra:
            detail.append(f"unknown columns: {', '.join(extra)}")
        if not missing and not extra:
            detail.append("columns are out of order")
        raise CatalogError(f"{where}:1: bad header ({'; '.join(detail)}). Expected: {','.join(COLUMNS)}")

    tasks: list[TaskRecord] = []
    first_line: dict[str, int] = {}
    try:
        for row in reader:
            line = reader.line_num
            if None in row or any(v is None for v in row.values()):
                n = len([v for v in row.values() if v is not None]) + len(row.get(None) or [])
                raise CatalogError(f"{where}:{line}: row has {n} fields, expected {len(COLUMNS)}")
            name = (row.get("name") or "").strip()
            try:
                record = _record_from_row(row)
            except _FieldError as e:
                label = f" (task {name!r})" if name else ""
                raise CatalogError(f"{where}:{line}{label}: field {e.field!r} {e.message}") from None
            if record.name in first_line:
                raise CatalogError(
                    f"{where}:{line}: duplicate task name {record.name!r} (first defined on line {first_line[record.name]})"
                )
            first_line[record.name] = line
            tasks.append(record)
    except csv.Error as e:
        raise CatalogError(f"{where}:{reader.line_num}: CSV syntax error: {e}") from None
    if not tasks:
        raise CatalogError(f"{where}: the catalog has no task rows")
    return Catalog(tasks, path=Path(path) if path is not None else None)


def format_row(record: TaskRecord) -> dict[str, str]:
    """The CSV row for a record (inverse of parsing)."""
    spec = record.loader
    return {
        "name": record.name,
        "submixture": record.submixture,
        "paper_group": record.paper_group,
        "source": record.source,
        "dataset": record.dataset,
        "csv_dataset": record.csv_dataset,
        "category": record.category,
        "inversions": _LIST_SEP.join(record.inversions),
        "languages": _LIST_SEP.join(record.languages),
        "template_family": record.template_family,
        "ability": record.ability,
        "loader": spec.kind,
        "loader_name": spec.name,
        "loader_config": spec.config,
        "loader_split": spec.split,
        "field_map": format_field_map(spec.field_map),
        "example_count": str(record.example_count),
        "count_source": record.count_source,
        "count_note": record.count_note,
        "enabled": "true" if record.enabled else "false",
        "disabled_reason": record.disabled_reason,
        "in_paper_count": "true" if record.in_paper_count else "false",
        "notes": record.notes,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Print the Flan 2022 catalog counts next to the paper's figures.")
    parser.add_argument("--catalog", default=None, help="catalog CSV (default: configs/catalog/flan2022_tasks.csv)")
    args = parser.parse_args(argv)
    cat = load_catalog(args.catalog)
    print(f"catalog: {cat.path}")
    print(cat.format_counts_table())
    abilities = Counter(t.ability for t in cat.enabled())
    print("\nenabled tasks by ability: " + ", ".join(f"{a} {abilities[a]}" for a in ABILITIES))
    counts = cat.paper_counts()
    ok = all(counts[g] == PAPER_TASK_COUNTS[g] for g in PAPER_GROUPS) and counts["total"] == PAPER_TOTAL_TASKS
    print("paper counts: " + ("match" if ok else "DO NOT MATCH"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
