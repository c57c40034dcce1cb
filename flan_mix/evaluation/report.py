"""Evaluation reports: a table on stdout, and the same rows as JSON and Markdown files."""
from __future__ import annotations

import json
import os
from typing import Any, Sequence


def _cell(value: Any) -> str:
    if value is None:  # a column that does not apply to the row (e.g. rank accuracy of a free-form task)
        return ""
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def text_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[_cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    fmt = lambda vals: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(vals, widths)))
    return "\n".join([fmt(columns), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells])


def write_report(rows: Sequence[dict[str, Any]], columns: Sequence[str], out_dir: str, name: str,
                 title: str, extra: dict[str, Any] | None = None) -> str:
    """Writes out_dir/name.json and out_dir/name.md; returns the text table."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump({"title": title, "rows": list(rows), **(extra or {})}, f, indent=2)
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write(f"# {title}\n\n{markdown_table(rows, columns)}\n")
    return text_table(rows, columns)
