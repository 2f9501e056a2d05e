"""The one renderer: rows as an aligned text table, CSV, JSON or Markdown (no terminal, no click:
the CLI, the report and the Python API all format through it).

``csv`` and ``json`` carry every value at full precision: floats as Python writes them
(shortest round-trip), booleans as ``true``/``false``, lists and objects as JSON, times in ISO
8601, NULL as an empty CSV cell / JSON ``null``. ``table`` and ``markdown`` are for reading:
they round each column to the decimals :func:`display_digits` gives it by name.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

FORMATS = ("table", "csv", "json", "markdown")


_DIGITS_BY_SUFFIX = (("_meV", 2), ("_A", 4), ("_s", 2))
_DIGITS_BY_NAME = {"precision": 3, "recall": 3, "f1": 3, "accuracy": 3, "prevalence": 3,
                   "daf": 2, "mean_steps": 1}


def display_digits(column: str) -> int | None:
    """Decimals a table shows of ``column``, read from the house's column names: energies in
    meV/atom (``*_meV``) 2, fractions (``frac_*``, ``*_frac_*``, precision, recall, ...) 3,
    lengths in Angstrom (``*_A``) 4, seconds (``*_s``) 2, DAF 2, mean steps 1; confidence
    bounds (``*_lo``, ``*_hi``) as their statistic. None: 6 significant digits."""
    base = column.removesuffix("_lo").removesuffix("_hi")
    if base in _DIGITS_BY_NAME:
        return _DIGITS_BY_NAME[base]
    if base.startswith("frac_") or "_frac_" in base:
        return 3
    for suffix, digits in _DIGITS_BY_SUFFIX:
        if base.endswith(suffix):
            return digits
    return None


def _cell(value: Any, digits: int | None = None) -> str:
    """A value as table text: floats rounded to ``digits`` decimals (when given), then at most
    6 significant digits."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return format(round(value, digits) if digits is not None else value, ".6g")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | dict):
        return json.dumps(json_value(value))
    return str(value)


def csv_value(value: Any) -> Any:
    """A value as a CSV cell: full-precision floats, ``true``/``false``, JSON for lists and
    objects, ISO 8601 times, empty for NULL."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value).lower()
    if isinstance(value, list | tuple | dict):
        return json.dumps(json_value(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return value


def json_value(value: Any) -> Any:
    """A value as JSON: NaN and infinities as null, times in ISO 8601, bytes as hex."""
    if isinstance(value, Decimal):
        value = float(value)
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
    rows = [[float(v) if isinstance(v, Decimal) else v for v in r] for r in rows]
    if fmt == "json":
        records = [dict(zip(columns, map(json_value, r), strict=True)) for r in rows]
        return json.dumps(records, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[csv_value(v) for v in r] for r in rows])
        return buf.getvalue()
    digits = [display_digits(c) for c in columns]
    text = [[_cell(v, d) for v, d in zip(r, digits, strict=True)] for r in rows]
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

