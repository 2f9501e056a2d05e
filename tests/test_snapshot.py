"""``mliapdb snapshot``: publish, pull over a real HTTP server on 127.0.0.1 (Range requests,
a connection cut mid-file), checksum and schema refusals, remote read-only queries, merge.

The databases are the real Mn-O-Y MP entries with real CHGNet single points (CPU, seconds):
A with CHGNet 0.3.0, B with CHGNet 0.2.0 on the same entries."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from trust import send_range

from mliapdb import __version__
from mliapdb.cli.main import cli
from mliapdb.store import database as db
from mliapdb.store import schema

SP = ["--kind", "single-point", "--limit", "5", "--max-sites", "4"]


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- a real HTTP server: Range requests, a log, connections cut on request ---------------------


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        server: FileServer = self.server  # type: ignore[assignment]
        name = self.path.lstrip("/")
        path = server.root / name
        byte_range = self.headers.get("Range")
        server.log.append((name, byte_range))
        if not path.is_file():
            self.send_error(404)
            return
        send_range(self, path.read_bytes(), server.cut.pop(name, None))


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.root = root
        self.log: list[tuple[str, str | None]] = []
        self.cut: dict[str, int] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[FileServer]:
    srv = FileServer(tmp_path_factory.mktemp("www"))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


# --- databases ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dbs(tmp_path_factory, mp_dir: Path) -> dict[str, Path]:
    """A: Mn-O-Y entries + CHGNet 0.3.0 single points; B: the same entries + CHGNet 0.2.0."""
    folder = tmp_path_factory.mktemp("dbs")
    base = folder / "base.duckdb"
    result = run("--db", base, "ingest", "entries", mp_dir / "Mn_O_Y_entries.json.gz")
    assert result.exit_code == 0, result.output
    out = {}
    for label, model in (("a", "chgnet-0.3.0"), ("b", "chgnet-0.2.0")):
        path = folder / f"{label}.duckdb"
        shutil.copyfile(base, path)
        result = run("--db", path, "ingest", "relax", "--model", model, *SP)
        assert result.exit_code == 0, result.output
        out[label] = path
    return out


@pytest.fixture(scope="module")
def published(dbs: dict[str, Path], server: FileServer) -> dict:
    """A published into the server's folder as ``mno``."""
    result = run("--db", dbs["a"], "snapshot", "publish", "--out", server.root, "--name", "mno",
                 "--format", "json")
    assert result.exit_code == 0, result.output
    manifest = json.loads((server.root / "mno.manifest.json").read_text())
    return {"manifest": manifest, "db": server.root / "mno.duckdb",
            "url": server.url("mno.duckdb")}


def serve_copy(server: FileServer, src: Path, name: str, sha: str | None = None) -> str:
    """Serve a copy of ``src`` as ``name``, in an index ``name.index.json`` with ``sha`` (its
    own sha256 by default) and the original's size; returns the index URL."""
    shutil.copyfile(src, server.root / name)
    index = {"format": "mliapdb-snapshot-index", "version": 1, "snapshots": [
        {"name": name.removesuffix(".duckdb"), "url": name, "sha256": sha or sha256(src),
         "size": src.stat().st_size, "description": "test"}]}
    (server.root / f"{name}.index.json").write_text(json.dumps(index))
    return server.url(f"{name}.index.json")


QUERIES = [
    ["query", "ehull-mae", "--by", "model", "--kind", "single-point"],
    ["query", "calculations", "--format", "csv"],
    ["sql", "SELECT material_id, model, convention, e_above_hull_error FROM ehull_errors "
            "ORDER BY ALL", "--format", "json"],
]


# --- publish -----------------------------------------------------------------------------------


def test_publish_writes_a_pinned_database_parquet_and_manifest(published, dbs) -> None:
    m, path = published["manifest"], published["db"]
    assert m["format"] == "mliapdb-snapshot" and m["name"] == "mno"
    assert m["schema_version"] == schema.code_schema_version()
    assert m["storage_version"] == "v1.0.0" and m["readable_by"]["duckdb"] == "1.1.0"
    assert m["readable_by"]["mliapdb"] == __version__
    assert m["software"]["duckdb"] == duckdb.__version__ and m["software"]["pymatgen"]
    assert m["license"]["license"] == "CC BY 4.0" and "011002 (2013)" in m["license"]["citation"]
    assert [x["name"] for x in m["models"]] == ["chgnet-0.3.0"]
    assert [(c["model"], c["calc_kind"], c["n"], c["ok"]) for c in m["calculations"]] == [
        ("chgnet-0.3.0", "single_point", 5, 5)]
    root = path.parent
    for entry in m["files"]:
        assert sha256(root / entry["path"]) == entry["sha256"], entry["path"]
        assert (root / entry["path"]).stat().st_size == entry["size"]
    with duckdb.connect(str(dbs["a"]), read_only=True) as con:
        tables = [r[0] for r in con.execute("SHOW TABLES").fetchall()]
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables
                  if t in m["tables"]}
    assert m["tables"] == counts and m["tables"]["mp_materials"] == 132
    assert {f"mno.parquet/{t}.parquet" for t in m["tables"]} == {
        e["path"] for e in m["files"][1:]}
    with duckdb.connect() as con:  # Parquet rows = table rows
        n = con.execute("SELECT count(*) FROM read_parquet(?)",
                        [str(root / "mno.parquet" / "calculations.parquet")]).fetchone()[0]
        assert n == m["tables"]["calculations"] == 5
        con.execute("ATTACH ? AS s (READ_ONLY)", [str(path)])
        tags = con.execute("SELECT tags FROM duckdb_databases() WHERE database_name = 's'"
                           ).fetchone()[0]
    assert tags["storage_version"] == "v1.0.0+"
    again = run("--db", dbs["a"], "snapshot", "publish", "--out", root, "--name", "mno")
    assert again.exit_code == 1 and again.stderr == (
        f"Error: {root / 'mno.duckdb'} exists - remove it, or pass another --out or --name\n")


def test_verify_finds_a_changed_file(published, tmp_path: Path) -> None:
    result = run("snapshot", "verify", published["db"], "--format", "csv")
    assert result.exit_code == 0, result.output
    assert all(line.split(",")[1] == "ok" for line in result.stdout.splitlines()[1:])
    copy = tmp_path / "mno.duckdb"
    shutil.copyfile(published["db"], copy)
    shutil.copyfile(published["db"].with_name("mno.manifest.json"), tmp_path / "mno.manifest.json")
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    result = run("snapshot", "verify", copy)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: 1 file(s) of snapshot mno differ from its manifest ({copy}: sha256 differs) - "
        "pull it again\n")


# --- pull --------------------------------------------------------------------------------------


def test_pull_by_url_then_queries_are_byte_identical(published, dbs, tmp_path: Path) -> None:
    result = run("snapshot", "pull", published["url"], "--to", tmp_path, "--format", "csv")
    assert result.exit_code == 0, result.output
    pulled = tmp_path / "mno.duckdb"
    assert result.stdout == (f"path,size,sha256,schema_version\n{pulled},"
                             f"{published['db'].stat().st_size},{sha256(published['db'])},"
                             f"{schema.code_schema_version()}\n")
    assert sha256(pulled) == sha256(published["db"])
    assert not (tmp_path / "mno.duckdb.part").exists()
    assert (tmp_path / "mno.manifest.json").is_file()
    assert run("snapshot", "verify", pulled).exit_code == 0
    for args in QUERIES:
        mine, theirs = run("--db", dbs["a"], *args), run("--db", pulled, *args)
        assert mine.exit_code == theirs.exit_code == 0, theirs.output
        assert mine.stdout == theirs.stdout and mine.stdout.count("\n") >= 2


def test_list_and_pull_by_name_from_an_index(published, server, tmp_path: Path) -> None:
    index = serve_copy(server, published["db"], "named.duckdb")
    result = run("snapshot", "list", "--index", index, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{
        "name": "named", "size": published["db"].stat().st_size,
        "sha256": sha256(published["db"]), "description": "test",
        "url": server.url("named.duckdb")}]
    dest = tmp_path / "x.duckdb"
    result = run("snapshot", "pull", "named", "--index", index, "--to", dest)
    assert result.exit_code == 0, result.output
    assert sha256(dest) == sha256(published["db"])
    missing = run("snapshot", "pull", "nope", "--index", index)
    assert missing.exit_code == 1 and missing.stderr == (
        "Error: no snapshot named 'nope' in the index (known: named) - 'mliapdb snapshot list' "
        "shows them; pass a URL or --index\n")


def test_pull_resumes_after_a_cut_connection(published, server, tmp_path: Path) -> None:
    size = published["db"].stat().st_size
    server.log.clear()
    server.cut["mno.duckdb"] = size // 3
    result = run("snapshot", "pull", published["url"], "--to", tmp_path)
    assert result.exit_code == 0, result.output
    assert sha256(tmp_path / "mno.duckdb") == sha256(published["db"])
    assert [r for n, r in server.log if n == "mno.duckdb"] == [None, f"bytes={size // 3}-"]
    assert f"connection lost at byte {size // 3}" in result.stderr
    assert f"resuming {published['url']} at byte {size // 3}" in result.stderr


def test_interrupted_pull_keeps_the_part_and_the_next_pull_resumes(
    published, server, tmp_path: Path, monkeypatch
) -> None:
    import mliapdb.sharing.download as download

    size = published["db"].stat().st_size
    dest = tmp_path / "mno.duckdb"
    part = tmp_path / "mno.duckdb.part"
    real_pull = download.pull
    monkeypatch.setattr(download, "pull", lambda *a, **k: real_pull(*a, **{**k, "retries": 0}))
    server.cut["mno.duckdb"] = size // 2
    result = run("snapshot", "pull", published["url"], "--to", tmp_path)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: download of {published['url']} interrupted at "
                                    f"byte {size // 2} (")
    assert result.stderr.endswith(f"run the same 'mliapdb snapshot pull' again to resume from "
                                  f"{part}\n")
    assert part.stat().st_size == size // 2 and not dest.exists()
    server.log.clear()
    result = run("snapshot", "pull", published["url"], "--to", tmp_path)
    assert result.exit_code == 0, result.output
    assert [r for n, r in server.log if n == "mno.duckdb"] == [f"bytes={size // 2}-"]
    assert sha256(dest) == sha256(published["db"]) and not part.exists()


@pytest.mark.parametrize("damage", ["flipped-byte", "truncated"])
def test_pull_refuses_a_damaged_file(published, server, tmp_path: Path, damage: str) -> None:
    name = f"{damage}.duckdb"
    index = serve_copy(server, published["db"], name, sha=sha256(published["db"]))
    data = bytearray((server.root / name).read_bytes())
    if damage == "flipped-byte":
        data[len(data) // 2] ^= 0x01
    else:
        data = data[: len(data) // 2]
    (server.root / name).write_bytes(bytes(data))
    result = run("snapshot", "pull", damage, "--index", index, "--to", tmp_path)
    assert result.exit_code == 1
    if damage == "flipped-byte":
        assert result.stderr == (
            f"Error: {damage}: sha256 {hashlib.sha256(data).hexdigest()} does not match the "
            f"expected {sha256(published['db'])} - the download is corrupt or the file was "
            "replaced; nothing was kept, pull it again\n")
    else:
        assert result.stderr == (
            f"Error: {damage}: got {len(data)} bytes, expected {published['db'].stat().st_size}"
            " - the file on the server is truncated or was replaced; nothing was kept\n")
    assert list(tmp_path.iterdir()) == []  # no file, no .part


def test_pull_refuses_a_newer_schema(published, server, tmp_path: Path) -> None:
    newer = tmp_path / "src" / "newer.duckdb"
    newer.parent.mkdir()
    shutil.copyfile(published["db"], newer)
    with duckdb.connect(str(newer)) as con:
        con.execute("INSERT INTO schema_migrations VALUES (99, 'future', now())")
    index = serve_copy(server, newer, "newer.duckdb")
    dest = tmp_path / "dest"
    dest.mkdir()
    result = run("snapshot", "pull", "newer", "--index", index, "--to", dest)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: newer has schema version 99 but this mliapdb ({__version__}) understands up "
        f"to {schema.code_schema_version()} - upgrade mliapdb to open it\n")
    assert list(dest.iterdir()) == []


# --- remote, read-only -------------------------------------------------------------------------


def test_remote_snapshot_queries_match_and_writes_are_refused(published, dbs) -> None:
    url = published["url"]
    for args in QUERIES:
        mine, remote = run("--db", dbs["a"], *args), run("--db", url, *args)
        assert remote.exit_code == 0, remote.output
        assert remote.stdout == mine.stdout
    refused = run("--db", url, "sql", "DELETE FROM models")
    assert refused.exit_code == 1
    assert refused.stderr.startswith("Error: ") and "read-only" in refused.stderr
    assert refused.stderr.count("\n") == 1
    refused = run("--db", url, "sql", "CREATE TABLE x (i INTEGER)")
    assert refused.exit_code == 1 and "read-only" in refused.stderr
    refused = run("--db", url, "ingest", "relax", "--model", "chgnet-0.3.0", "--limit", "1")
    assert refused.exit_code == 1
    assert refused.stderr == (
        f"Error: {url} is a remote snapshot and opens read-only - 'mliapdb snapshot pull "
        f"{url}' downloads a copy you can write to\n")


def test_python_api_reads_a_remote_snapshot_like_the_local_file(published, dbs) -> None:
    """``mliapdb.open(URL)``: the same DataFrames and entries as the local file, the size from
    the server, and no write."""
    import mliapdb
    from mliapdb.errors import MliapdbError

    with mliapdb.open(published["url"]) as remote, mliapdb.open(dbs["a"]) as local:
        for method, kwargs in (("ehull_mae", {"by": "model", "kind": "single-point"}),
                               ("calculation_summary", {}), ("materials", {})):
            assert getattr(remote, method)(**kwargs).equals(getattr(local, method)(**kwargs))
        assert [e.energy for e in remote.entries()] == [e.energy for e in local.entries()]
        info = remote.info()
        assert info.size_bytes == published["db"].stat().st_size
        assert info.models == ["chgnet-0.3.0"]
        with pytest.raises(MliapdbError, match="read-only"):
            remote.sql("DELETE FROM calculations")
    with pytest.raises(MliapdbError, match="remote snapshot and opens read-only"):
        mliapdb.open(published["url"], read_only=False)


def test_remote_snapshot_with_older_views_gets_this_codes_views(published, server,
                                                                 tmp_path: Path) -> None:
    old = tmp_path / "old.duckdb"
    shutil.copyfile(published["db"], old)
    with duckdb.connect(str(old)) as con:
        con.execute("CREATE OR REPLACE VIEW materials AS SELECT 1 AS old")
        con.execute("UPDATE db_settings SET value = 'old' WHERE key = 'views_sha256'")
    serve_copy(server, old, "oldviews.duckdb")
    url = server.url("oldviews.duckdb")
    result = run("--db", url, "sql", "SELECT count(*) AS n FROM materials", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout == "n\n132\n"
    refused = run("--db", url, "sql", "CREATE TABLE x (i INTEGER)")
    assert refused.exit_code == 1 and "read-only" in refused.stderr


def test_remote_missing_file_is_a_clear_error(server) -> None:
    url = server.url("nothing-here.duckdb")
    result = run("--db", url, "sql", "SELECT 1")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: cannot open {url}: ")
    assert result.stderr.count("\n") == 1


# --- merge -------------------------------------------------------------------------------------


def test_merge_unions_models_without_duplicating_materials(dbs, tmp_path: Path) -> None:
    merged = tmp_path / "c.duckdb"
    result = run("snapshot", "merge", dbs["a"], dbs["b"], "--into", merged, "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = {line.split(",")[0]: line.split(",")[1:] for line in result.stdout.splitlines()[1:]}
    assert rows["mp_materials"] == ["132", "132", "132"]
    assert rows["calculations"] == ["5", "5", "10"]
    assert rows["models"] == ["1", "1", "2"]
    assert rows["model_hull_builds"] == ["1", "1", "2"]
    with duckdb.connect(str(merged), read_only=True) as con:
        assert con.execute("SELECT name FROM models ORDER BY 1").fetchall() == [
            ("chgnet-0.2.0",), ("chgnet-0.3.0",)]
        hull = con.execute("SELECT material_id, e_above_hull FROM dft_hull ORDER BY 1"
                           ).fetchall()
    with duckdb.connect(str(dbs["a"]), read_only=True) as con:
        assert hull == con.execute("SELECT material_id, e_above_hull FROM dft_hull ORDER BY 1"
                                   ).fetchall()
    for label, model in (("a", "chgnet-0.3.0"), ("b", "chgnet-0.2.0")):
        args = ["query", "ehull-mae", "--by", "model", "--kind", "single-point", "--model",
                model, "--format", "csv"]
        assert run("--db", merged, *args).stdout == run("--db", dbs[label], *args).stdout


def test_merge_refuses_conflicting_dft_data_and_writes_nothing(dbs, tmp_path: Path) -> None:
    changed = tmp_path / "changed.duckdb"
    shutil.copyfile(dbs["b"], changed)
    with duckdb.connect(str(changed)) as con:
        mid = con.execute("SELECT min(material_id) FROM dft_entries").fetchone()[0]
        before = con.execute("SELECT energy_raw FROM dft_entries WHERE material_id = ?",
                             [mid]).fetchone()[0]
        con.execute("UPDATE dft_entries SET energy_raw = energy_raw - 0.5 WHERE material_id = ?",
                    [mid])
    out = tmp_path / "out"
    out.mkdir()
    result = run("snapshot", "merge", dbs["a"], changed, "--into", out / "c.duckdb")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: conflicting DFT data for mp/{mid}: dft_entries.energy_raw is {before!r} in "
        f"{dbs['a']} but {before - 0.5!r} in {changed} - nothing was written; these files hold "
        "different data for it (ingest one under another --dataset)\n")
    assert list(out.iterdir()) == []


def test_every_table_is_known_to_merge(tmp_path: Path) -> None:
    from mliapdb.sharing.merge import _classify

    with db.connect(tmp_path / "x.duckdb", create=True) as con:
        kinds = _classify(con)
    assert "mp_materials" in kinds["source"] and "dft_hull" in kinds["derived"]


@pytest.fixture()
def newer_code(tmp_path: Path, monkeypatch) -> int:
    """This code with one more (harmless) migration: the test databases are one version older."""
    from mliapdb.config import schema_dir

    folder = tmp_path / "schema"
    shutil.copytree(schema_dir(), folder)
    n = schema.code_schema_version() + 1
    (folder / "migrations" / f"{n:04d}_merge_test.sql").write_text(
        "INSERT INTO db_settings VALUES ('merge_test', 'yes');\n")
    monkeypatch.setattr(schema, "shipped_schema_dir", lambda: folder)
    return n


def test_merge_migrates_older_inputs_in_temporary_copies(dbs, tmp_path: Path,
                                                         newer_code: int) -> None:
    before = {k: sha256(p) for k, p in dbs.items()}
    merged = tmp_path / "c.duckdb"
    result = run("snapshot", "merge", dbs["a"], dbs["b"], "--into", merged)
    assert result.exit_code == 0, result.output
    for path in dbs.values():
        assert (f"{path}: schema version {newer_code - 1} migrated to {newer_code} in a "
                "temporary copy (the file itself is unchanged)") in result.stderr
    assert {k: sha256(p) for k, p in dbs.items()} == before
    with duckdb.connect(str(merged), read_only=True) as con:
        assert schema.db_schema_version(con) == newer_code
        assert con.execute("SELECT value FROM db_settings WHERE key = 'merge_test'"
                           ).fetchone() == ("yes",)
        assert con.execute("SELECT count(*) FROM calculations").fetchone() == (10,)


def test_remote_snapshot_of_an_older_schema_is_refused(published, newer_code: int) -> None:
    url = published["url"]
    result = run("--db", url, "sql", "SELECT 1")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {url} has schema version {newer_code - 1}, older than this mliapdb's "
        f"{newer_code}, and a remote snapshot cannot be migrated - 'mliapdb snapshot pull "
        f"{url}' downloads a copy that is migrated when opened\n")
