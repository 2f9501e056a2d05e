"""What a database holds (``mliapdb info``, ``Database.info()``): its file, schema version,
datasets, models, calculations by kind and status, and whether the derived tables (model hulls,
stored error rows) are up to date with the base tables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import NamedTuple

import duckdb


class DatasetCount(NamedTuple):
    dataset: str
    materials: int
    accepted_entries: int
    """DFT entries MP2020 accepted (the ones the hull and the statistics use)."""
    symmetry_analyses: int
    source_files: int


class CalculationCount(NamedTuple):
    model: str
    kind: str
    settings_hash: str
    dataset: str
    ok: int
    not_converged: int
    failed: int


class DerivedState(NamedTuple):
    table: str
    builds: int
    """Stored builds (one per dataset x model x settings x kind)."""
    stale: int
    """Builds missing or out of date: their rows are computed live until 'mliapdb ingest
    hulls' stores them."""


@dataclass
class Inventory:
    location: str
    size_bytes: int | None
    schema_version: int
    code_schema_version: int
    mliapdb_version: str
    settings: dict[str, str] = field(default_factory=dict)
    """``db_settings``: default symmetry tolerance and method, statistics thresholds, ..."""
    datasets: list[DatasetCount] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    calculations: list[CalculationCount] = field(default_factory=list)
    derived: list[DerivedState] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str, str]]:
        """(section, item, value) lines: what ``mliapdb info`` prints."""
        size = "remote" if self.size_bytes is None else _size(self.size_bytes)
        out = [("file", self.location, size),
               ("schema", "version", f"{self.schema_version} (this mliapdb {self.mliapdb_version}"
                                     f" understands up to {self.code_schema_version})")]
        out += [("setting", k, v) for k, v in sorted(self.settings.items())]
        out += [("dataset", d.dataset,
                 f"{d.materials} materials, {d.accepted_entries} accepted DFT entries, "
                 f"{d.symmetry_analyses} symmetry analyses, {d.source_files} source file(s)")
                for d in self.datasets]
        out += [("model", m, "") for m in self.models]
        out += [("calculations", f"{c.model} {c.kind.replace('_', '-')} {c.settings_hash[:8]} "
                 f"{c.dataset}", f"{c.ok} ok, {c.not_converged} not converged, "
                 f"{c.failed} failed") for c in self.calculations]
        out += [("derived", d.table, f"{d.builds} built, {d.stale} missing or stale"
                 + (" - 'mliapdb ingest hulls' stores them" if d.stale else ""))
                for d in self.derived]
        return out


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def inventory(con: duckdb.DuckDBPyConnection, location: str) -> Inventory:
    """The :class:`Inventory` of the open database ``con`` (read at ``location``)."""
    from mliapdb import __version__
    from mliapdb.analysis.error_rows import n_stale as stale_rows
    from mliapdb.analysis.model_hull import n_stale as stale_hulls
    from mliapdb.store import schema
    from mliapdb.store.remote import is_remote, remote_size

    size = remote_size(location) if is_remote(location) else (
        os.path.getsize(location) if os.path.isfile(location) else None)
    datasets = [DatasetCount(*r) for r in con.execute("""
        SELECT m.dataset, count(*),
            (SELECT count(*) FROM dft_entries e
             WHERE e.dataset = m.dataset AND e.compat_status = 'ok'),
            (SELECT count(*) FROM symmetry_analyses s WHERE s.dataset = m.dataset),
            (SELECT count(*) FROM source_files f WHERE f.dataset = m.dataset)
        FROM mp_materials AS m GROUP BY m.dataset ORDER BY m.dataset""").fetchall()]
    calculations = [CalculationCount(*r) for r in con.execute("""
        SELECT model, calc_kind, settings_hash, dataset,
            count(*) FILTER (WHERE status = 'ok'),
            count(*) FILTER (WHERE status = 'not_converged'),
            count(*) FILTER (WHERE status = 'failed')
        FROM calculations GROUP BY ALL ORDER BY ALL""").fetchall()]
    derived = [
        DerivedState("model_hull", _count(con, "model_hull_builds"), stale_hulls(con)),
        DerivedState("ehull_error_rows", _count(con, "ehull_error_builds"), stale_rows(con)),
    ]
    return Inventory(
        location=location, size_bytes=size, schema_version=schema.db_schema_version(con),
        code_schema_version=schema.code_schema_version(), mliapdb_version=__version__,
        settings=dict(con.execute("SELECT key, value FROM db_settings "
                                  "WHERE key <> 'views_sha256'").fetchall()),
        datasets=datasets,
        models=[r[0] for r in con.execute("SELECT name FROM models ORDER BY 1").fetchall()],
        calculations=calculations, derived=derived)


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
