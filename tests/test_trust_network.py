"""Bounded network work and inert snapshot files (issue 10, item 4): crafted answers from a real
HTTP server on 127.0.0.1 (an endless body, a drip, a paging lie, garbage and wrongly shaped
MP API answers) and crafted manifests and indexes (paths outside the snapshot, missing or
mistyped fields, local paths in a remote index, terminal escapes). Each case is one ``Error:``
line, exit 1, and nothing changed on disk."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from trust import assert_one_line_error, crafted_server, run, unchanged

SIZE = 100_000
BODY = bytes(range(256)) * (SIZE // 256) + bytes(SIZE % 256)
SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def server() -> Iterator:
    with crafted_server() as srv:
        srv.stop = threading.Event()  # ends the drips at teardown
        yield srv
        srv.stop.set()


def index_file(folder: Path, *entries: dict) -> Path:
    """A local index holding ``entries``."""
    path = folder / "index.json"
    path.write_text(json.dumps({"format": "mliapdb-snapshot-index", "version": 1,
                                "snapshots": list(entries)}))
    return path


def entry(url: str, **extra) -> dict:
    return {"name": "snap", "url": url, "sha256": SHA, "size": SIZE, "description": "test",
            **extra}


def headers(handler: BaseHTTPRequestHandler, length: int | None, status: int = 200) -> None:
    handler.send_response(status)
    if length is not None:
        handler.send_header("Content-Length", str(length))
    handler.end_headers()


# --- 1. an endless body ------------------------------------------------------------------------


def test_pull_stops_at_the_indexed_size_of_an_endless_body(server, tmp_path: Path) -> None:
    sent = [0]

    def endless(handler: BaseHTTPRequestHandler) -> None:
        headers(handler, None)  # no length: the body ends when the connection does
        block = b"\0" * 65536
        while sent[0] < 256 << 20 and not server.stop.is_set():  # 256 MiB: a test gone wrong
            handler.wfile.write(block)
            sent[0] += len(block)

    server.routes["/snap.duckdb"] = endless
    index = index_file(tmp_path, entry(server.url("snap.duckdb")))
    dest = tmp_path / "dest"
    dest.mkdir()
    with unchanged(dest):
        result = run("snapshot", "pull", "snap", "--index", index, "--to", dest)
    assert_one_line_error(result, "snap: the server sent more than the 100000 bytes the index "
                          "says - it is not the published file; nothing was kept")
    time.sleep(0.2)
    assert sent[0] < SIZE + (32 << 20)  # what the socket buffers held, not 300 MiB


def test_pull_refuses_a_body_announced_longer_than_the_manifest(server, tmp_path: Path) -> None:
    manifest = {"format": "mliapdb-snapshot", "manifest_version": 1, "name": "snap",
                "database": "snap.duckdb", "schema_version": 1,
                "files": [{"path": "snap.duckdb", "size": SIZE, "sha256": SHA}]}
    server.routes["/snap.manifest.json"] = lambda h: (headers(h, len(json.dumps(manifest))),
                                                      h.wfile.write(json.dumps(manifest).encode()))
    server.routes["/snap.duckdb"] = lambda h: headers(h, 10 * SIZE)
    with unchanged(tmp_path):
        result = run("snapshot", "pull", server.url("snap.duckdb"), "--to", tmp_path)
    assert_one_line_error(result, f"{server.url('snap.duckdb')}: the server announces 1000000 "
                          "bytes but the manifest says 100000 - it is not the published file; "
                          "nothing was kept")


def test_pull_without_a_known_size_is_refused(server, tmp_path: Path) -> None:
    index = index_file(tmp_path, entry(server.url("snap.duckdb"), size=None))
    with unchanged(tmp_path):
        result = run("snapshot", "pull", "snap", "--index", index, "--to", tmp_path)
    assert_one_line_error(result, "no size known for", "add \"size\" (bytes) to the index entry")
    assert server.requests == ["/snap.manifest.json"]  # the file itself was never asked for


# --- 2. a drip ---------------------------------------------------------------------------------


def drip(server, every_s: float):
    def answer(handler: BaseHTTPRequestHandler) -> None:
        headers(handler, SIZE)
        for i in range(SIZE):
            if server.stop.wait(every_s):
                return
            handler.wfile.write(BODY[i:i + 1])
            handler.wfile.flush()
    return answer


def test_pull_gives_up_at_the_deadline_of_a_drip(server, tmp_path: Path) -> None:
    server.routes["/snap.duckdb"] = drip(server, 5.0)  # one byte every 5 s
    index = index_file(tmp_path, entry(server.url("snap.duckdb")))
    dest = tmp_path / "dest"
    dest.mkdir()
    began = time.monotonic()
    with unchanged(dest):
        result = run("snapshot", "pull", "snap", "--index", index, "--to", dest,
                     "--deadline", "1")
    assert time.monotonic() - began < 4
    assert_one_line_error(result, "Error: download of snap given up at byte 0 of 100000 (past "
                          "--deadline 1 s) - run the same 'mliapdb snapshot pull' again to "
                          "retry, or change --min-rate/--deadline")


def test_pull_gives_up_under_the_minimum_rate_and_keeps_the_part(server, tmp_path: Path) -> None:
    server.routes["/snap.duckdb"] = drip(server, 0.1)  # ten bytes a second
    index = index_file(tmp_path, entry(server.url("snap.duckdb")))
    began = time.monotonic()
    result = run("snapshot", "pull", "snap", "--index", index, "--to", tmp_path,
                 "--min-rate", "100", "--rate-window", "1")
    assert time.monotonic() - began < 4
    part = tmp_path / "snap.duckdb.part"
    line = assert_one_line_error(result, "Error: download of snap given up at byte ",
                                 "bytes/s) - run the same 'mliapdb snapshot pull' again to "
                                 f"resume from {part}, or change --min-rate/--deadline")
    assert "under --min-rate 100 bytes/s" in line
    got = part.stat().st_size  # what resume needs, and it is the start of the file
    assert 0 < got < 100 and part.read_bytes() == BODY[:got]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json", "snap.duckdb.part"]


@pytest.mark.parametrize("option", ["--deadline", "--rate-window", "--min-rate"])
def test_pull_limits_must_be_finite(option: str, tmp_path: Path) -> None:
    with unchanged(tmp_path):
        result = run("snapshot", "pull", "x.duckdb", "--to", tmp_path, option, "nan")
    assert_one_line_error(result, f"{option} nan: give a finite number")


# --- 5, 6. manifests: paths outside the snapshot, missing and mistyped fields ------------------


def snapshot_files(folder: Path, files: object, **extra) -> tuple[Path, Path]:
    """``folder/snap.duckdb`` (any bytes: the manifest is refused before it is read) and a
    manifest listing ``files``."""
    database = folder / "snap.duckdb"
    database.write_bytes(BODY)
    manifest = {"format": "mliapdb-snapshot", "manifest_version": 1, "name": "snap",
                "database": "snap.duckdb", "schema_version": 1,
                "files": files, **extra}
    (folder / "snap.manifest.json").write_text(json.dumps(manifest))
    return database, folder / "snap.manifest.json"


DB_ENTRY = {"path": "snap.duckdb", "size": SIZE, "sha256": SHA}


@pytest.mark.parametrize("outside", ["/etc/passwd", "../../x", "a/../../x", "C:/x", "a\\..\\x"])
def test_verify_refuses_paths_outside_the_snapshot(outside: str, tmp_path: Path) -> None:
    database, _ = snapshot_files(tmp_path, [DB_ENTRY, {"path": outside, "size": 1,
                                                       "sha256": SHA}])
    with unchanged(tmp_path):
        result = run("snapshot", "verify", database)
    assert_one_line_error(result, f"files entry #2 ({outside!r}): the path must be relative and "
                          "inside the manifest's folder (no '..', no absolute path) - refused")
    assert result.stdout == ""  # nothing hashed, nothing printed


def test_verify_refuses_a_symlink_out_of_the_snapshot(tmp_path: Path) -> None:
    folder = tmp_path / "snap"
    folder.mkdir()
    (tmp_path / "secret").write_text("not the snapshot's")
    (folder / "snap.parquet").mkdir()
    (folder / "snap.parquet" / "t.parquet").symlink_to(tmp_path / "secret")
    database, _ = snapshot_files(folder, [DB_ENTRY, {"path": "snap.parquet/t.parquet",
                                                     "size": 17, "sha256": SHA}])
    with unchanged(tmp_path):
        result = run("snapshot", "verify", database)
    assert_one_line_error(result, "files entry 'snap.parquet/t.parquet' leads outside",
                          "(through a symbolic link) - refused")
    assert result.stdout == ""


MALFORMED = {
    "no_sha256": ([DB_ENTRY, {"path": "t.parquet", "size": 1}],
                  "files entry #2 ('t.parquet') has no sha256"),
    "size_text": ([{**DB_ENTRY, "size": "100000"}],
                  "files entry #1 ('snap.duckdb'): size '100000' is not a number of bytes"),
    "size_float": ([{**DB_ENTRY, "size": 1e5}],
                   "files entry #1 ('snap.duckdb'): size 100000.0 is not a number of bytes"),
    "sha256_short": ([{**DB_ENTRY, "sha256": "abc"}],
                     "files entry #1 ('snap.duckdb'): sha256 'abc' is not 64 lowercase hex"),
    "files_dict": ({"snap.duckdb": DB_ENTRY}, "\"files\" is {'snap.duckdb': {"),
    "entry_list": ([["snap.duckdb", SIZE, SHA]], "files entry #1 is ['snap.duckdb', 100000,"),
    "path_number": ([{**DB_ENTRY, "path": 7}], "files entry #1: path 7 is not a file name"),
    "name_escape": ([DB_ENTRY], "name 'snap\\x1b[2J' is not a string without control"),
    "schema_text": ([DB_ENTRY], "schema_version '9' is not a non-negative integer"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_verify_names_the_malformed_manifest_entry(case: str, tmp_path: Path) -> None:
    files, message = MALFORMED[case]
    extra = {"name_escape": {"name": "snap\x1b[2J"}, "schema_text": {"schema_version": "9"}}
    database, manifest = snapshot_files(tmp_path, files, **extra.get(case, {}))
    with unchanged(tmp_path):
        result = run("snapshot", "verify", database)
    assert_one_line_error(result, f"Error: {manifest}: {message}")
    assert "\x1b" not in result.output


@pytest.mark.parametrize("content", [b"[" * 100_000, b"\xff\xfe{}", b"<html>nope</html>"])
def test_verify_of_a_manifest_that_is_not_json(content: bytes, tmp_path: Path) -> None:
    database, manifest = snapshot_files(tmp_path, [DB_ENTRY])
    manifest.write_bytes(content)
    with unchanged(tmp_path):
        result = run("snapshot", "verify", database)
    assert_one_line_error(result, f"Error: {manifest} is not valid JSON (",
                          "- fetch the manifest again")


def test_pull_names_the_malformed_manifest_entry(server, tmp_path: Path) -> None:
    manifest = json.dumps({"format": "mliapdb-snapshot", "manifest_version": 1, "name": "snap",
                           "database": "snap.duckdb", "files": [{"path": "snap.duckdb",
                                                                 "size": SIZE}]}).encode()
    server.routes["/snap.manifest.json"] = lambda h: (headers(h, len(manifest)),
                                                      h.wfile.write(manifest))
    with unchanged(tmp_path):
        result = run("snapshot", "pull", server.url("snap.duckdb"), "--to", tmp_path)
    assert_one_line_error(result, f"Error: {server.url('snap.manifest.json')}: files entry #1 "
                          "('snap.duckdb') has no sha256 - fetch it again or tell its publisher")
    assert server.requests == ["/snap.manifest.json"]


# --- 7, 8. indexes: local paths from a remote index, control characters ------------------------


def serve_index(server, *entries: dict) -> str:
    blob = json.dumps({"format": "mliapdb-snapshot-index", "version": 1,
                       "snapshots": list(entries)}).encode()
    server.routes["/index.json"] = lambda h: (headers(h, len(blob)), h.wfile.write(blob))
    return server.url("index.json")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x.duckdb",
                                 "file:snap.duckdb"])
def test_a_remote_index_may_not_name_a_local_file(url: str, server, tmp_path: Path) -> None:
    index = serve_index(server, entry(url))
    for args in (["list"], ["pull", "snap", "--to", tmp_path]):
        with unchanged(tmp_path):
            result = run("snapshot", *args, "--index", index)
        assert_one_line_error(result, f"Error: {index}: snapshot 'snap': url {url!r} is not "
                              "http(s) - a remote index may only name http(s) URLs, absolute or "
                              "relative to the index; refused")


def test_remote_index_urls_resolve_against_the_index(server, tmp_path: Path) -> None:
    index = serve_index(server, entry("snap.duckdb"), {**entry("/etc/passwd"), "name": "abs"})
    result = run("snapshot", "list", "--index", index, "--format", "json")
    assert result.exit_code == 0, result.output
    assert [e["url"] for e in json.loads(result.stdout)] == [
        server.url("snap.duckdb"), server.url("etc/passwd")]  # the index's own server


def test_a_local_index_may_name_local_files(tmp_path: Path) -> None:
    index = index_file(tmp_path, entry("snap.duckdb"), {**entry("/data/x.duckdb"), "name": "x"})
    result = run("snapshot", "list", "--index", index, "--format", "json")
    assert result.exit_code == 0, result.output
    assert [e["url"] for e in json.loads(result.stdout)] == [
        str(tmp_path / "snap.duckdb"), "/data/x.duckdb"]


@pytest.mark.parametrize("fmt", ["table", "csv", "json", "markdown"])
def test_list_escapes_control_characters_of_a_description(fmt: str, server) -> None:
    index = serve_index(server, entry("snap.duckdb", description="ok\x1b]0;owned\x07\x9b2J\n"))
    result = run("snapshot", "list", "--index", index, "--format", fmt)
    assert result.exit_code == 0, result.output
    assert not any(c in result.output for c in "\x1b\x07\x9b")
    assert "ok\\x1b]0;owned\\x07\\x9b2J\\x0a" in result.stdout.replace("\\\\", "\\")


@pytest.mark.parametrize("field", ["name", "url"])
def test_list_refuses_control_characters_in_a_name_or_url(field: str, server) -> None:
    index = serve_index(server, {**entry("snap.duckdb"), field: "snap\x1b[2J.duckdb"})
    result = run("snapshot", "list", "--index", index)
    assert_one_line_error(result, f"Error: {index}: snapshot #1: {field} 'snap\\x1b[2J.duckdb' "
                          "must be a non-empty string without control characters - fix the index")
    assert "\x1b" not in result.output


BAD_INDEX = {
    "size_text": ({"size": "9 MB"}, "snapshot 'snap': size '9 MB' is not a number of bytes"),
    "size_negative": ({"size": -1}, "snapshot 'snap': size -1 is not a number of bytes"),
    "sha256_number": ({"sha256": 7}, "snapshot 'snap': sha256 7 is not 64 lowercase hex"),
    "description_list": ({"description": ["x"]}, "snapshot 'snap': description must be a "
                         "string"),
}


@pytest.mark.parametrize("case", list(BAD_INDEX))
def test_list_names_the_malformed_index_entry(case: str, tmp_path: Path) -> None:
    extra, message = BAD_INDEX[case]
    index = index_file(tmp_path, entry("snap.duckdb", **extra))
    result = run("snapshot", "list", "--index", index)
    assert_one_line_error(result, f"Error: {index}: {message}")


def test_an_index_whose_snapshots_are_not_a_list(tmp_path: Path) -> None:
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"format": "mliapdb-snapshot-index", "snapshots": {"a": 1}}))
    assert_one_line_error(run("snapshot", "list", "--index", index),
                          f"Error: {index}: \"snapshots\" must be a list of entries")


# --- 3, 4. the MP API: a paging lie, garbage and wrongly shaped answers ------------------------

KEY = "0123456789abcdef0123456789abcdef"
THERMO = "/materials/thermo/"


@pytest.fixture
def mp(monkeypatch) -> Iterator:
    """A crafted MP API on 127.0.0.1: a valid ``/heartbeat`` and whatever ``THERMO`` the test
    sets; nothing else is reachable, and mp-api's heartbeat caches start empty."""
    from emmet.core import __version__ as emmet_version
    from mp_api.client import MPRester
    from mp_api.client.core.client import _Rester

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    MPRester.get_emmet_version.cache_clear()
    _Rester._get_heartbeat_info.cache_clear()
    with crafted_server() as srv:
        srv.stop = threading.Event()
        srv.routes["/heartbeat"] = json_route({"db_version": "2025.09.25", "version": emmet_version,
                                               "access_controlled_batch_ids": []})
        yield srv
        srv.stop.set()


def json_route(body: object, status: int = 200):
    blob = body if isinstance(body, bytes) else json.dumps(body).encode()

    def answer(handler: BaseHTTPRequestHandler) -> None:
        headers(handler, len(blob), status)
        handler.wfile.write(blob)
    return answer


def thermo_pages(pages: Callable[[int, int], tuple[list, int]]):
    """``THERMO`` answering ``pages(skip, limit) -> (documents, claimed total)``."""
    def answer(handler: BaseHTTPRequestHandler) -> None:
        from urllib.parse import parse_qs, urlparse

        query = {k: v[0] for k, v in parse_qs(urlparse(handler.path).query).items()}
        docs, total = pages(int(query.get("_skip", 0)), int(query.get("_limit", 1000)))
        json_route({"data": docs, "meta": {"total_doc": total, "max_limit": 1000}})(handler)
    return answer


def doc(i: int) -> dict:
    return {"material_id": f"mp-{i}", "entries": {}}


def ingest_mp(srv, tmp_path: Path, *args: str):
    return run("--db", tmp_path / "db.duckdb", "ingest", "mp", "--chemsys", "Mn-O",
               "--api-key", KEY, "--endpoint", srv.url(""), "--retries", "0", *args)


def thermo_requests(srv) -> int:
    return sum(r.startswith(THERMO) for r in srv.requests)


def test_ingest_mp_refuses_an_implausible_document_count(mp, tmp_path: Path) -> None:
    mp.routes[THERMO] = thermo_pages(lambda skip, limit: ([doc(skip + i) for i in range(limit)],
                                                          10**7))
    began = time.monotonic()
    with unchanged(tmp_path):
        result = ingest_mp(mp, tmp_path)
    assert_one_line_error(result, f"Error: the Materials Project API at {mp.url(THERMO)} claims "
                          "10000000 documents for one query, more than the 50000 any chemical "
                          "system can match (MP holds about 160,000 materials) - refused; check "
                          "--endpoint")
    assert thermo_requests(mp) == 1 and time.monotonic() - began < 10


PAGING_LIES = {
    "none": (lambda skip, limit: ([], 5000),
             "it claims 5000 documents but gave none at _skip=0 (_limit=1000, expected 1000)", 1),
    "repeats": (lambda skip, limit: ([doc(i) for i in range(limit)], 3000),
                "it served mp-0 twice (pages repeat)", 2),
    "short_page": (lambda skip, limit: ([doc(skip + i) for i in range(10)], 3000),
                   "it claims 3000 documents but gave 10 at _skip=0 (_limit=1000, expected "
                   "1000)", 1),
    "count_changes": (lambda skip, limit: ([doc(skip + i) for i in range(limit)],
                                           2000 + skip),
                      "it claimed 2000 documents, then 3000", 2),
    "too_many": (lambda skip, limit: ([doc(i) for i in range(limit + 5)], 5000),
                 "it claims 5000 documents but gave 1005 at _skip=0 (_limit=1000, expected "
                 "1000)", 1),
}


@pytest.mark.parametrize("case", list(PAGING_LIES))
def test_ingest_mp_stops_at_inconsistent_paging(case: str, mp, tmp_path: Path) -> None:
    pages, message, n_requests = PAGING_LIES[case]
    mp.routes[THERMO] = thermo_pages(pages)
    with unchanged(tmp_path):
        result = ingest_mp(mp, tmp_path)
    assert_one_line_error(result, f"Error: the Materials Project API at {mp.url(THERMO)} pages "
                          f"inconsistently: {message} - refused, nothing written; try again "
                          "later, or check --endpoint")
    assert thermo_requests(mp) == n_requests


def test_ingest_mp_reads_consistent_pages_to_the_end(mp, tmp_path: Path) -> None:
    """A consistent server of 2500 documents without a GGA entry: three requests, then the
    ordinary "no entries" error (the guard lets honest paging through)."""
    mp.routes[THERMO] = thermo_pages(
        lambda skip, limit: ([doc(skip + i) for i in range(min(limit, 2500 - skip))], 2500))
    with unchanged(tmp_path):
        result = ingest_mp(mp, tmp_path)
    assert_one_line_error(result, "has no GGA/GGA+U entries with structures in Mn-O or its "
                          "subsystems (2500 left out)")
    assert thermo_requests(mp) == 3


SHAPES = {
    "html": (b"<html><body>502 Bad Gateway</body></html>",
             "something that is not JSON ('<html><body>502 Bad Gateway</body></html'...)"),
    "nested": (b"[" * 100_000, "something that is not JSON ('[[[["),
    "not_utf8": (b"\xff\xfe\x00garbage", "something that is not JSON ("),
    "list": ([1, 2], "a wrongly shaped document (list, not an object)"),
    "no_data": ({"meta": {"total_doc": 1}}, "a wrongly shaped document (no \"data\" list)"),
    "data_dict": ({"data": {"a": 1}, "meta": {"total_doc": 1}}, "(no \"data\" list)"),
    "no_meta": ({"data": []}, "(no \"meta\" with an integer \"total_doc\")"),
    "total_text": ({"data": [], "meta": {"total_doc": "7"}},
                   "(no \"meta\" with an integer \"total_doc\")"),
    "doc_text": ({"data": ["mp-1"], "meta": {"total_doc": 1}},
                 "(data[0] is str, not an object)"),
    "id_number": ({"data": [{"material_id": 149}], "meta": {"total_doc": 1}},
                  "(data[0].material_id 149 is not a material id)"),
    "id_escape": ({"data": [{"material_id": "mp-1\x1b[2J"}], "meta": {"total_doc": 1}},
                  "(data[0].material_id 'mp-1\\x1b[2J' is not a material id)"),
    "entries_list": ({"data": [{"material_id": "mp-1", "entries": []}],
                      "meta": {"total_doc": 1}}, "(mp-1: entries is list, not an object)"),
}


@pytest.mark.parametrize("case", list(SHAPES))
def test_ingest_mp_names_a_malformed_answer(case: str, mp, tmp_path: Path) -> None:
    body, message = SHAPES[case]
    mp.routes[THERMO] = json_route(body)
    with unchanged(tmp_path):
        result = ingest_mp(mp, tmp_path)
    assert_one_line_error(result, f"Error: the Materials Project API at {mp.url(THERMO)} "
                          "answered with ", message, " - check --endpoint")
    assert "\x1b" not in result.output


def test_ingest_mp_names_malformed_entries_in_a_document(mp, tmp_path: Path) -> None:
    weird = {"GGA": {"parameters": {"run_type": ["GGA"]}, "structure": "none"},
             "x": [1], "GGA+U": {"parameters": "GGA+U", "structure": {"lattice": "?"},
                                 "energy": "low", "composition": 7}}
    mp.routes[THERMO] = json_route({"data": [{"material_id": "mp-1", "entries": weird}],
                                    "meta": {"total_doc": 1}})
    with unchanged(tmp_path):
        result = ingest_mp(mp, tmp_path)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.splitlines()[-1] == (
        "Error: mp-api:chemsys=Mn-O: entry 0 (mp-1): energy is 'low', not a finite number (eV)")


@pytest.mark.parametrize("status", [401, 422, 500])
def test_ingest_mp_error_answers_of_any_shape(status: int, mp, tmp_path: Path) -> None:
    mp.routes[THERMO] = json_route([{"detail": "\x1b[2J"}] if status != 500 else b"\x1b[2J<html>",
                                   status)
    with unchanged(tmp_path):
        result = ingest_mp(mp, tmp_path)
    assert_one_line_error(result, f"HTTP {status}")
    assert "\x1b" not in result.output


HEARTBEATS = {
    "html": (b"<html>down</html>", "not JSON: '<html>down</html>'"),
    "list": ([], "list, not an object"),
    "no_db_version": ({"version": "0.1", "access_controlled_batch_ids": []},
                      "no 'db_version' in it"),
    "bad_version": ({"version": "\x1b[2J", "db_version": "1",
                     "access_controlled_batch_ids": []},
                    "'version' '\\x1b[2J' is not a version"),
    "db_version_escape": ({"version": "0.1", "db_version": "2025\x1b[2J",
                           "access_controlled_batch_ids": []},
                          "'db_version' '2025\\x1b[2J' is not a short version string"),
    "ids_text": ({"version": "0.1", "db_version": "1", "access_controlled_batch_ids": "all"},
                 "'access_controlled_batch_ids' is not a list"),
}


@pytest.mark.parametrize("case", list(HEARTBEATS))
def test_ingest_mp_names_a_malformed_heartbeat(case: str, mp, tmp_path: Path) -> None:
    body, message = HEARTBEATS[case]
    mp.routes["/heartbeat"] = json_route(body)
    with unchanged(tmp_path):
        result = ingest_mp(mp, tmp_path)
    assert_one_line_error(result, f"Error: the Materials Project API at {mp.url('')} gave no "
                          f"valid /heartbeat answer ({message}) - check --endpoint, or try "
                          "again later")
    assert thermo_requests(mp) == 0


def test_ingest_mp_bounds_the_size_and_time_of_an_answer(mp, tmp_path: Path,
                                                         monkeypatch) -> None:
    import mliapdb.materials.mp_api as mp_api

    monkeypatch.setattr(mp_api, "DEFAULT_BOUNDS",
                        mp_api.ApiBounds(max_answer_bytes=1 << 20, answer_deadline_s=1.0))

    def endless(handler: BaseHTTPRequestHandler) -> None:
        headers(handler, None)
        handler.wfile.write(b'{"data": [' + b" " * (64 << 20))

    def drip(handler: BaseHTTPRequestHandler) -> None:
        headers(handler, None)
        while not mp.stop.wait(0.2):
            handler.wfile.write(b" ")
            handler.wfile.flush()

    for answer, message in ((endless, "sent more than 1 MiB in one answer - refused"),
                            (drip, "took more than 1 s for one answer")):
        mp.routes[THERMO] = answer
        began = time.monotonic()
        with unchanged(tmp_path):
            result = ingest_mp(mp, tmp_path)
        assert_one_line_error(result, f"Error: the Materials Project API at {mp.url(THERMO)} "
                              f"{message}")
        assert time.monotonic() - began < 5
