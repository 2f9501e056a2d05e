"""A database file is data, never code; ``mliapdb sql`` is read-only by construction.

Real databases (the Mn-O MP entries, real CHGNet single points), tampered with DuckDB the way
a hostile publisher would, opened locally, merged, and served by a real HTTP server on
127.0.0.1. Every refusal is one ``Error:`` line, exit 1, and leaves every file as it was."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from trust import assert_one_line_error, crafted_server, digest, file_route, run, unchanged

from mliapdb.store import database as db

HOSTNAME = Path("/etc/hostname")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, mp_dir: Path) -> Path:
    """Mn-O entries and CHGNet 0.3.0 single points on the 3 smallest cells (never modified)."""
    path = tmp_path_factory.mktemp("pristine") / "mno.duckdb"
    result = run("--db", path, "ingest", "entries", mp_dir / "Mn_O_entries.json.gz")
    assert result.exit_code == 0, result.output
    result = run("--db", path, "ingest", "relax", "--model", "chgnet-0.3.0", "--kind",
                 "single-point", "--max-sites", "4", "--limit", "3")
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture()
def copy(pristine: Path, tmp_path: Path) -> Path:
    path = tmp_path / "copy.duckdb"
    shutil.copyfile(pristine, path)
    return path


def tamper(path: Path, *statements: str) -> None:
    """Change a database file with plain DuckDB, keeping its stored views hash (the attack)."""
    with duckdb.connect(str(path)) as con:
        for statement in statements:
            con.execute(statement)


QUERY_MAE = ["query", "ehull-mae", "--by", "model", "--kind", "single-point", "--format", "json"]


# --- sql: read-only by construction ------------------------------------------------------------


@pytest.mark.parametrize("statement,refused", [
    ("ATTACH ':memory:' AS m (READ_WRITE)", "ATTACH statements are refused"),
    ("USE memory", "SET statements are refused"),
    ("DETACH data", "DETACH statements are refused"),
    ("ATTACH '{other}' AS v (READ_WRITE)", "ATTACH statements are refused"),
    ("DELETE FROM mp_materials", "DELETE statements are refused"),
    ("DROP TABLE calculations CASCADE", "DROP statements are refused"),
    ("COPY calculations TO '{out}'", "COPY statements are refused"),
    ("EXPORT DATABASE '{out}'", "EXPORT statements are refused"),
    ("INSTALL httpfs", "LOAD statements are refused"),
    ("LOAD httpfs", "LOAD statements are refused"),
    ("SET enable_external_access = true", "SET statements are refused"),
    ("CREATE TEMP TABLE t AS SELECT 1", "CREATE statements are refused"),
    ("CALL checkpoint()", "CALL statements are refused"),
    ("PRAGMA enable_profiling", "PRAGMA statements are refused"),
    ("SELECT 1; DROP TABLE calculations", "exactly one statement, got 2"),
    ("SELECT 1; SELECT 2", "exactly one statement, got 2"),
])
def test_sql_refuses_every_statement_that_is_not_a_read(copy: Path, tmp_path: Path,
                                                         statement: str, refused: str) -> None:
    other = tmp_path / "other.duckdb"
    shutil.copyfile(copy, other)
    out = tmp_path / "out"
    sql = statement.format(other=other, out=out)
    with unchanged(copy, other, out):
        assert_one_line_error(run("--db", copy, "sql", sql), refused)


def test_the_attach_use_detach_chain_cannot_reach_the_file(copy: Path) -> None:
    chain = (f"ATTACH ':memory:' AS m (READ_WRITE); USE m; DETACH data; ATTACH '{copy}' AS w "
             "(READ_WRITE); DROP TABLE w.calculations CASCADE")
    with unchanged(copy):
        assert_one_line_error(run("--db", copy, "sql", chain), "exactly one statement, got 5")
        for statement in chain.split("; "):
            assert_one_line_error(run("--db", copy, "sql", statement), "statements are refused")


@pytest.mark.parametrize("statement", [
    f"SELECT content FROM read_text('{HOSTNAME}')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM query('SELECT 1 FROM read_text(''/etc/hostname'')')",
])
def test_sql_reads_no_file_it_was_not_given(copy: Path, statement: str) -> None:
    with unchanged(copy):
        assert_one_line_error(run("--db", copy, "sql", statement),
                              "'mliapdb sql' reads only the database and the files named with "
                              "--read")


def test_sql_reads_parquet_named_with_read_and_nothing_beside_it(copy: Path,
                                                                 tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir()
    with duckdb.connect() as con:
        con.execute(f"COPY (SELECT 1 AS a UNION ALL SELECT 2) TO '{folder / 'p.parquet'}'")
        con.execute(f"COPY (SELECT 3 AS a) TO '{tmp_path / 'q.parquet'}'")
    ok = run("--db", copy, "sql", f"SELECT sum(a) AS s FROM read_parquet('{folder}/p.parquet')",
             "--read", folder, "--format", "csv")
    assert ok.exit_code == 0, ok.output
    assert ok.stdout == "s\n3\n"
    ok = run("--db", copy, "sql", f"SELECT a FROM '{tmp_path / 'q.parquet'}'",
             "--read", tmp_path / "q.parquet", "--format", "csv")
    assert ok.stdout == "a\n3\n"
    assert_one_line_error(
        run("--db", copy, "sql", f"SELECT * FROM '{tmp_path / 'q.parquet'}'", "--read", folder),
        "Cannot access file")


def test_sql_still_reads_the_database_and_its_views(copy: Path) -> None:
    with unchanged(copy):
        result = run("--db", copy, "sql", "SELECT count(*) AS n FROM materials", "--format",
                     "csv")
    assert result.exit_code == 0 and result.stdout == "n\n90\n"
    result = run("--db", copy, "sql", "SELECT count(*) AS n FROM calculations WHERE model = ?",
                 "--param", "chgnet-0.3.0", "--format", "csv")
    assert result.stdout == "n\n3\n"


def test_remote_sql_cannot_write_a_local_file(pristine: Path, tmp_path: Path) -> None:
    local = tmp_path / "local.duckdb"
    shutil.copyfile(pristine, local)
    with crafted_server() as server:
        server.routes["/mno.duckdb"] = file_route(pristine)
        url = server.url("mno.duckdb")
        with unchanged(local, pristine):
            for statement in (f"ATTACH '{local}' AS w", "DELETE FROM mp_materials",
                              f"COPY mp_materials TO '{tmp_path / 'x.csv'}'"):
                assert_one_line_error(run("--db", url, "sql", statement),
                                      "statements are refused")
            assert_one_line_error(run("--db", url, "sql", f"SELECT * FROM '{local}'"),
                                  "reads only the database")
            result = run("--db", url, "sql", "SELECT count(*) AS n FROM materials",
                         "--format", "csv")
        assert result.exit_code == 0 and result.stdout == "n\n90\n", result.output


# --- a file's views and macros never run -------------------------------------------------------


def test_a_view_reading_a_local_file_never_runs(pristine: Path, copy: Path) -> None:
    tamper(copy, "CREATE OR REPLACE VIEW materials AS SELECT content AS material_id, 1 AS x "
                 f"FROM read_text('{HOSTNAME}')")
    secret = HOSTNAME.read_text().strip() if HOSTNAME.is_file() else "\0"
    expected = run("--db", pristine, "sql", "SELECT material_id FROM materials ORDER BY 1",
                   "--format", "csv").stdout
    with crafted_server() as server:
        server.routes["/evil.duckdb"] = file_route(copy)
        for target in (str(copy), server.url("evil.duckdb")):
            with unchanged(copy):
                result = run("--db", target, "sql",
                             "SELECT material_id FROM materials ORDER BY 1", "--format", "csv")
            assert result.exit_code == 0, result.output
            assert result.stdout == expected and secret not in result.output


def test_changed_views_do_not_change_what_queries_compute(pristine: Path, copy: Path) -> None:
    """The views hash string still matches; the definitions do not: this code's views run."""
    tamper(copy, "CREATE OR REPLACE VIEW ehull_errors AS SELECT * REPLACE "
                 "(0.0 AS e_above_hull_error) FROM ehull_errors_all")
    expected = run("--db", pristine, *QUERY_MAE)
    assert expected.exit_code == 0, expected.output
    assert json.loads(expected.stdout)[0]["mae_meV"] > 0
    with crafted_server() as server:
        server.routes["/evil.duckdb"] = file_route(copy)
        for target in (str(copy), server.url("evil.duckdb")):
            with unchanged(copy):
                result = run("--db", target, *QUERY_MAE)
            assert result.exit_code == 0, result.output
            assert result.stdout == expected.stdout


@pytest.mark.parametrize("macro,shown", [
    ("CREATE MACRO abs(x) AS 0", "macro function main.abs"),
    ("CREATE MACRO round(x, n) AS 0", "macro function main.round"),
    ("CREATE MACRO count_star() AS 0", "macro function main.count_star"),
    ("CREATE MACRO duckdb_tables() AS TABLE SELECT 1 AS table_name",
     "table_macro function main.duckdb_tables"),
    ("CREATE SEQUENCE s", "sequence main.s"),
    ("CREATE SCHEMA extra", "schema extra"),
])
def test_a_file_carrying_macros_is_refused_everywhere(copy: Path, tmp_path: Path, macro: str,
                                                      shown: str) -> None:
    tamper(copy, macro)
    into = tmp_path / "merged.duckdb"
    other = tmp_path / "other.duckdb"
    shutil.copyfile(copy, other)
    with crafted_server() as server:
        server.routes["/evil.duckdb"] = file_route(copy)
        url = server.url("evil.duckdb")
        with unchanged(copy, into, tmp_path / "pub"):
            for args in (["--db", copy, *QUERY_MAE], ["--db", url, *QUERY_MAE],
                         ["--db", copy, "sql", "SELECT 1"],
                         ["--db", copy, "ingest", "hulls"],
                         ["--db", copy, "snapshot", "publish", "--out", tmp_path / "pub"],
                         ["snapshot", "merge", other, copy, "--into", into]):
                assert_one_line_error(run(*args), shown, "which mliapdb never writes")


def test_a_table_replaced_by_a_view_is_refused(copy: Path, tmp_path: Path,
                                               pristine: Path) -> None:
    tamper(copy, "DROP TABLE mp_api_fetches",
           f"CREATE VIEW mp_api_fetches AS SELECT content FROM read_text('{HOSTNAME}')")
    into = tmp_path / "merged.duckdb"
    with crafted_server() as server:
        server.routes["/evil.duckdb"] = file_route(copy)
        with unchanged(copy, into, pristine):
            for args in (["--db", copy, "sql", "SELECT * FROM mp_api_fetches"],
                         ["--db", server.url("evil.duckdb"), *QUERY_MAE],
                         ["--db", copy, "ingest", "hulls"],
                         ["snapshot", "merge", pristine, copy, "--into", into]):
                assert_one_line_error(run(*args), "mp_api_fetches is a view, not mliapdb's "
                                      "table")


def test_a_table_with_other_columns_is_refused(copy: Path) -> None:
    tamper(copy, "ALTER TABLE models DROP COLUMN checkpoint_sha256")
    with unchanged(copy):
        assert_one_line_error(run("--db", copy, *QUERY_MAE),
                              "table models lacks column(s) checkpoint_sha256")


def test_a_foreign_view_is_left_out(copy: Path, pristine: Path) -> None:
    tamper(copy, f"CREATE VIEW leak AS SELECT content FROM read_text('{HOSTNAME}')")
    with unchanged(copy):
        assert_one_line_error(run("--db", copy, "sql", "SELECT * FROM leak"),
                              "view leak of", "is not one of mliapdb's views and is left out")
        assert run("--db", copy, *QUERY_MAE).stdout == run("--db", pristine, *QUERY_MAE).stdout


def test_publish_leaves_foreign_views_out_of_the_snapshot(copy: Path, tmp_path: Path) -> None:
    tamper(copy, "CREATE VIEW mine AS SELECT 1 AS x")
    with unchanged(copy):
        result = run("--db", copy, "snapshot", "publish", "--out", tmp_path / "pub")
    assert result.exit_code == 0, result.output
    with duckdb.connect(str(tmp_path / "pub" / "copy.duckdb"), read_only=True) as con:
        views = {r[0] for r in con.execute(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert "mine" not in views and "ehull_errors" in views


# --- --db must be a DuckDB file or a new path --------------------------------------------------


def _sqlite(path: Path) -> None:
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE t (a)")


@pytest.mark.parametrize("name,make,what", [
    ("x.json", lambda p: p.write_text('{"a": 1}'), "is a JSON file, not a DuckDB database"),
    ("x.csv", lambda p: p.write_text("a,b\n1,2\n"), "is not a DuckDB database"),
    ("x.parquet", lambda p: duckdb.execute(f"COPY (SELECT 1 AS a) TO '{p}'"),
     "is a Parquet file, not a DuckDB database"),
    ("x.sqlite", _sqlite, "is a SQLite database, not a DuckDB database"),
    ("x.duckdb", lambda p: p.write_bytes(b""), "is an empty file, not a DuckDB database"),
    ("x.gz", lambda p: p.write_bytes(b"\x1f\x8b\x08\x00garbage"), "is a gzip file"),
])
def test_db_must_be_a_duckdb_file(tmp_path: Path, mp_dir: Path, pristine: Path, name, make,
                                  what) -> None:
    path = tmp_path / name
    make(path)
    into = tmp_path / "merged.duckdb"
    with unchanged(tmp_path):
        for args in (["--db", path, "ingest", "entries", mp_dir / "Mn_O_entries.json.gz"],
                     ["--db", path, *QUERY_MAE], ["--db", path, "sql", "SELECT 1"],
                     ["--db", path, "ingest", "hulls"],
                     ["--db", path, "snapshot", "publish", "--out", tmp_path / "pub"],
                     ["snapshot", "merge", pristine, path, "--into", into]):
            assert_one_line_error(run(*args), f"{path} {what}")


def test_a_duckdb_file_that_is_not_mliapdbs_is_refused(tmp_path: Path, mp_dir: Path) -> None:
    path = tmp_path / "theirs.duckdb"
    tamper(path, "CREATE TABLE prices AS SELECT 1 AS eur")
    with unchanged(path):
        assert_one_line_error(
            run("--db", path, "ingest", "entries", mp_dir / "Mn_O_entries.json.gz"),
            "is a DuckDB database but not mliapdb's", "holds prices")


def test_a_folder_as_db_is_one_line(tmp_path: Path) -> None:
    with unchanged(tmp_path):
        assert_one_line_error(run("--db", tmp_path, *QUERY_MAE), "is a folder, not a database")


# --- written only when something changes -------------------------------------------------------


def test_a_refused_or_no_op_command_leaves_the_file_byte_identical(copy: Path, tmp_path: Path,
                                                                   mp_dir: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2, 3]")
    with unchanged(copy):
        assert run("--db", copy, "ingest", "entries", bad).exit_code == 1
        assert run("--db", copy, "ingest", "entries", mp_dir / "Mn_O_entries.json.gz"
                   ).exit_code == 0  # the same data again: nothing new
        assert run("--db", copy, "ingest", "hulls").exit_code == 0
        assert run("--db", copy, *QUERY_MAE).exit_code == 0
        assert run("--db", copy, "ingest", "relax", "--model", "chgnet-9").exit_code == 1


def test_a_refused_ingest_into_a_new_path_leaves_no_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2, 3]")
    new = tmp_path / "new.duckdb"
    assert run("--db", new, "ingest", "entries", bad).exit_code == 1
    assert not new.exists() and not Path(f"{new}.wal").exists()


def test_an_older_views_file_is_read_without_being_written(copy: Path, pristine: Path) -> None:
    tamper(copy, "UPDATE db_settings SET value = 'old' WHERE key = 'views_sha256'",
           "CREATE OR REPLACE VIEW dft_stability AS SELECT 1 AS x")
    with unchanged(copy):
        result = run("--db", copy, *QUERY_MAE)
    assert result.exit_code == 0 and result.stdout == run("--db", pristine, *QUERY_MAE).stdout


def test_publish_only_reads_its_source(pristine: Path, tmp_path: Path) -> None:
    """Another process holds the source open read-only: a read-write open would fail."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1], "
         "read_only=True); print('open', flush=True); sys.stdin.read()", str(pristine)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with unchanged(pristine):
            result = run("--db", pristine, "snapshot", "publish", "--out", tmp_path / "pub")
        assert result.exit_code == 0, result.output
    finally:
        holder.communicate("")
    assert (tmp_path / "pub" / "mno.manifest.json").is_file()


def test_publish_into_a_folder_that_cannot_be_made_is_one_line(pristine: Path,
                                                               tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with unchanged(tmp_path):
        assert_one_line_error(
            run("--db", pristine, "snapshot", "publish", "--out", blocker / "pub"),
            f"cannot create {blocker / 'pub'}")


def test_opening_never_installs_or_loads_an_extension(copy: Path) -> None:
    con = db.connect(copy, read_only=True)
    try:
        settings = dict(con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name LIKE 'auto%_known_extensions'"
        ).fetchall())
    finally:
        con.close()
    assert settings == {"autoinstall_known_extensions": "false",
                        "autoload_known_extensions": "false"}
    assert digest(copy)
