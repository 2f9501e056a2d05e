"""Schema: migrations applied once each in a transaction, views re-applied, newer schema
refused, SQLModel classes and docs/schema.md matching the migrated database."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

import mliapdb.store.database as db
from mliapdb.cli.main import cli
from mliapdb.config import REPO_ROOT, schema_dir
from mliapdb.errors import MliapdbError
from mliapdb.store import schema, upgrade
from mliapdb.store.tables import ALL_TABLES, NO_PRIMARY_KEY


def test_fresh_database_is_migrated_once(tmp_path: Path) -> None:
    path = tmp_path / "x.duckdb"
    con = db.connect(path, create=True)
    assert schema.db_schema_version(con) == schema.code_schema_version() >= 1
    assert con.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(
        schema.migrations()
    )
    assert upgrade.migrate(con) == []  # nothing pending the second time
    con.close()
    with db.connect(path) as again:
        assert again.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(
            schema.migrations()
        )


def test_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MliapdbError, match=r"no database at .*nope.duckdb - run 'mliapdb"):
        db.connect(tmp_path / "nope.duckdb", read_only=True)


def test_failing_migration_rolls_back(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "schema"
    shutil.copytree(schema_dir(), folder)
    n = len(schema.migrations())
    (folder / "migrations" / f"{n + 1:04d}_broken.sql").write_text(
        "CREATE TABLE half_done (x INTEGER);\nTHIS IS NOT SQL;\n"
    )
    monkeypatch.setattr(schema, "shipped_schema_dir", lambda: folder)
    path = tmp_path / "x.duckdb"
    with pytest.raises(duckdb.Error):
        db.connect(path, create=True)
    con = duckdb.connect(str(path))
    assert schema.db_schema_version(con) == n
    tables = {
        r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    }
    assert "half_done" not in tables
    con.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.duckdb"
    db.connect(path, create=True).close()
    with duckdb.connect(str(path)) as con:
        con.execute("INSERT INTO schema_migrations VALUES (99, 'future', now())")
    result = CliRunner().invoke(cli, ["--db", str(path), "sql", "SELECT 1"])
    assert result.exit_code == 1
    from mliapdb import __version__

    known = schema.code_schema_version()
    assert result.stderr == (
        f"Error: {path} has schema version 99 but this mliapdb ({__version__}) understands "
        f"up to {known} - upgrade mliapdb to open it\n"
    )
    with pytest.raises(MliapdbError, match="schema version 99"):
        db.connect(path)


def _db_columns(con) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "ORDER BY table_name, ordinal_position"
    ).fetchall():
        out.setdefault(table, []).append(column)
    return out


def test_sqlmodel_classes_match_migrated_tables(tmp_path: Path) -> None:
    con = db.connect(tmp_path / "x.duckdb", create=True)
    columns = _db_columns(con)
    for model in ALL_TABLES:
        table = model.__tablename__
        assert [c.name for c in model.__table__.columns] == columns[table], table
        pk = con.execute(
            "SELECT constraint_column_names FROM duckdb_constraints() "
            "WHERE table_name = ? AND constraint_type = 'PRIMARY KEY'",
            [table],
        ).fetchall()
        expected = [] if table in NO_PRIMARY_KEY else [
            [c.name for c in model.__table__.primary_key.columns]]
        assert [list(r[0]) for r in pk] == expected, table
    con.close()


def test_schema_docs_cover_every_table_view_and_column(tmp_path: Path) -> None:
    con = db.connect(tmp_path / "x.duckdb", create=True)
    columns = _db_columns(con)
    con.close()
    text = (REPO_ROOT / "docs" / "schema.md").read_text()
    sections = dict(re.findall(r"^### (\w+)\n(.*?)(?=^##|\Z)", text, re.M | re.S))
    assert set(sections) == set(columns)
    for name, cols in columns.items():
        same = re.match(r"`(\w+)` .*\(same columns\)", sections[name])
        if same:
            assert columns[same.group(1)] == cols, name
            continue
        for col in cols:
            assert f"`{col}`" in sections[name], f"docs/schema.md: {name}.{col} undocumented"


def test_views_have_no_catalog_qualified_names() -> None:
    for path in schema.view_files():
        sql = path.read_text()
        assert not re.search(r"\b(main|memory|system|temp)\.\w", sql), path.name


def test_queries_leave_the_file_untouched(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "x.duckdb"
    db.connect(path, create=True).close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    result = CliRunner().invoke(cli, ["--db", str(path), "sql", "SELECT count(*) FROM materials"])
    assert result.exit_code == 0 and result.stdout.splitlines()[-1].strip() == "0"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_stale_views_are_refreshed(tmp_path: Path) -> None:
    path = tmp_path / "x.duckdb"
    with db.connect(path, create=True) as con:
        con.execute("CREATE OR REPLACE VIEW materials AS SELECT 1 AS old")
        con.execute("UPDATE db_settings SET value = 'old' WHERE key = 'views_sha256'")
    result = CliRunner().invoke(cli, ["--db", str(path), "sql", "SELECT * FROM materials"])
    assert result.exit_code == 0
    assert result.stdout.split()[0] == "dataset"


def test_database_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    path = tmp_path / "x.duckdb"
    db.connect(path, create=True).close()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb, time; c = duckdb.connect({str(path)!r}); print('ok', flush=True); "
         "time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ok"
        time.sleep(0.2)
        result = CliRunner().invoke(cli, ["--db", str(path), "--lock-timeout", "0", "sql",
                                             "SELECT 1"])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {path} is in use by another process (PID {holder.pid}) (a running 'mliapdb "
        "ingest'?), still after 0 s - wait for it to finish and run again, wait longer with "
        "--lock-timeout SECONDS (or $MLIAPDB_LOCK_TIMEOUT), or query a copy of the file\n"
    )
