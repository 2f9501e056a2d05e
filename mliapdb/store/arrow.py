"""Arrow schemas of mliapdb's tables, from their SQLModel classes (:mod:`mliapdb.store.tables`),
for columnar inserts: rows built as columns of plain values, no object per row."""

from __future__ import annotations

import types
import typing
from datetime import datetime
from functools import cache
from typing import Any

STAGE_COLUMNS = (("_sha", "string"), ("_idx", "int64"))
"""Extra columns of a staged row: its source file's sha256 and its index in the file."""


def _arrow_type(annotation: Any):
    import pyarrow as pa

    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType | typing._UnionGenericAlias) and args:  # type: ignore[attr-defined]
        annotation = args[0]
    return {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(),
            datetime: pa.timestamp("us")}[annotation]


@cache
def arrow_schema(table: str, staged: bool = False):
    """The pyarrow schema of ``table``'s columns in order (plus :data:`STAGE_COLUMNS`)."""
    import pyarrow as pa
    from sqlmodel import SQLModel

    from mliapdb.store import tables  # noqa: F401 - registers the table classes

    model = next(m for m in SQLModel.metadata.tables.values() if m.name == table)
    cls = next(c for c in SQLModel.__subclasses__() if getattr(c, "__tablename__", None)
               == table)
    fields = [pa.field(col.name, _arrow_type(cls.model_fields[col.name].annotation))
              for col in model.columns]
    if staged:
        fields += [pa.field(name, getattr(pa, kind)()) for name, kind in STAGE_COLUMNS]
    return pa.schema(fields)
