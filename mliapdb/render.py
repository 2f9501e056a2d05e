"""The one renderer: rows as an aligned text table, CSV, JSON or Markdown (no terminal, no click:
the CLI, the report and the Python API all format through it)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from typing import Any

FORMATS = ("table", "csv", "json", "markdown")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return format(value, ".6g")
    return str(value)


def json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


def markdown_table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]
) -> str:
    """A Markdown table of text cells, numeric columns right-aligned (no final newline)."""
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(cells, widths, numeric, strict=True)
        ) + " |"

    rule = "|" + "|".join(
        "-" * (w + 1) + ":" if num else "-" * (w + 2)
        for w, num in zip(widths, numeric, strict=True)
    ) + "|"
    return "\n".join([line(columns), rule] + [line(r) for r in rows])


def render(columns: Sequence[str], rows: Iterable[Sequence[Any]], fmt: str) -> str:
    """Rows as ``table`` (aligned text), ``csv``, ``json`` (array of objects) or
    ``markdown``; the result ends with a newline."""
    rows = [list(r) for r in rows]
    if fmt == "json":
        records = [dict(zip(columns, map(json_value, r), strict=True)) for r in rows]
        return json.dumps(records, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in r] for r in rows])
        return buf.getvalue()
    text = [[_cell(v) for v in r] for r in rows]
    numeric = [
        all(isinstance(r[i], int | float) or r[i] is None for r in rows) and bool(rows)
        for i in range(len(columns))
    ]
    widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(columns)]

    def line(cells: Sequence[str]) -> Iterator[str]:
        for i, cell in enumerate(cells):
            yield cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])

    if fmt == "markdown":
        return markdown_table(columns, text, numeric) + "\n"
    if fmt == "table":
        out = ["  ".join(line(columns)).rstrip(), "  ".join("-" * w for w in widths)]
        out += ["  ".join(line(r)).rstrip() for r in text]
        return "\n".join(out) + "\n"
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")

