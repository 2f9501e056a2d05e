"""``mliapdb ingest mp``: the real mp-api client against a real HTTP server on 127.0.0.1 that
answers like the Materials Project API (``GET /heartbeat``, ``GET /materials/thermo/``) with
thermo documents built from the real MP entries in ../shared/data. The database equals what
``ingest entries`` gives from the same file; subsystems come complete; the MP database
version is recorded; every failure is one line and writes nothing."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import duckdb
import pytest
from click.testing import CliRunner

from mliapdb.cli.main import cli

KEY = "0123456789abcdef0123456789abcdef"  # MP keys have 32 characters
WRONG_KEY = "ffffffffffffffffffffffffffffffff"
DB_VERSION = "2025.09.25"
THERMO = "/materials/thermo/"
MN_O_Y = ["Mn", "O", "Y", "Mn-O", "Mn-Y", "O-Y", "Mn-O-Y"]
TABLES = (
    "source_files", "mp_api_fetches", "mp_materials", "dft_entries", "symmetry_analyses",
    "wyckoff_orbits", "dft_hull",
)


def thermo_doc(entry: dict) -> dict:
    """The GGA_GGA+U thermo document of one MP entry, as the API serves it (entries keyed
    by run type)."""
    from pymatgen.core import Composition

    comp = Composition(entry["composition"])
    run_type = entry["parameters"]["run_type"]
    mid = entry["entry_id"]
    return {
        "material_id": mid,
        "thermo_id": f"{mid}_GGA_GGA+U",
        "thermo_type": "GGA_GGA+U",
        "chemsys": comp.chemical_system,
        "formula_pretty": comp.reduced_formula,
        "energy_type": run_type,
        "entry_types": [run_type],
        "entries": {run_type: entry},
    }


class FakeMP:
    """What the fake API serves, how it fails, and the requests it saw (path, params)."""

    def __init__(self, docs: list[dict], db_version: str = DB_VERSION) -> None:
        self.docs = docs
        self.db_version = db_version
        self.bad_key_status = 401  # answer to a key it does not know
        self.fail: list[int] = []  # statuses for the next thermo requests, one each
        self.fail_always: int | None = None
        self.cut_from: int | None = None  # thermo pages at this _skip or later break off
        self.n_cuts = 0
        self.requests: list[tuple[str, dict[str, str]]] = []

    def thermo_requests(self) -> list[dict[str, str]]:
        return [params for path, params in self.requests if path == THERMO]

    def cut_now(self, path: str, params: dict[str, str]) -> bool:
        """Whether this answer breaks off half-way (the connection dropped mid-page)."""
        cut = path == THERMO and self.cut_from is not None \
            and int(params.get("_skip", 0)) >= self.cut_from
        self.n_cuts += cut
        return cut

    def answer(self, path: str, params: dict[str, str],
               key: str | None) -> tuple[int, dict | bytes]:
        from emmet.core import __version__ as emmet_version

        self.requests.append((path, params))
        if path == "/heartbeat":  # public, like MP's
            return 200, {"db_version": self.db_version, "access_controlled_batch_ids": [],
                         "version": emmet_version}
        if path != THERMO:
            return 404, {"detail": "Not Found"}
        if key != KEY:
            return self.bad_key_status, {"detail": "Invalid API key"}
        if self.fail or self.fail_always:
            status = self.fail.pop(0) if self.fail else self.fail_always
            return status, {"detail": f"failure {status}"}
        docs = self.docs
        for name, field in (("chemsys", "chemsys"), ("material_ids", "material_id"),
                            ("thermo_types", "thermo_type")):
            if name in params:
                wanted = set(params[name].split(","))
                docs = [d for d in docs if d[field] in wanted]
        skip, limit = int(params.get("_skip", 0)), int(params.get("_limit", 1000))
        page = docs[skip: skip + limit]
        if "_fields" in params:
            fields = params["_fields"].split(",")
            page = [{f: d[f] for f in fields if f in d} for d in page]
        return 200, {"data": page, "meta": {"api_version": emmet_version,
                                            "time_stamp": "2025-09-25T00:00:00",
                                            "total_doc": len(docs), "max_limit": 1000}}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlparse(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        api = self.server.api
        status, body = api.answer(url.path, params, self.headers.get("x-api-key"))
        blob = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(blob)))
        if status == 429:
            self.send_header("Retry-After", "0")
        self.end_headers()
        if status == 200 and api.cut_now(url.path, params):
            self.wfile.write(blob[: len(blob) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(blob)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def serve(api: FakeMP) -> Iterator[str]:
    """Run the fake API on a free port of 127.0.0.1; yields its address."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.api = api
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


def load(mp_dir: Path, name: str) -> list[dict]:
    with gzip.open(mp_dir / name) as fh:
        return json.load(fh)


@pytest.fixture(autouse=True)
def no_internet(monkeypatch) -> None:
    """Any request not to 127.0.0.1 goes to a closed proxy port and fails at once."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("MP_API_KEY", raising=False)


@pytest.fixture(scope="module")
def api(mp_dir: Path) -> Iterator[tuple[FakeMP, str]]:
    """The fake API serving Mn-Na-O-Y (265 entries: more than Mn-O-Y and its subsystems)."""
    fake = FakeMP([thermo_doc(e) for e in load(mp_dir, "Mn_Na_O_Y_entries.json.gz")])
    with serve(fake) as endpoint:
        yield fake, endpoint


@pytest.fixture
def fake(api) -> FakeMP:
    """The module's fake API, reset to answer normally."""
    api[0].fail, api[0].fail_always, api[0].bad_key_status = [], None, 401
    api[0].requests.clear()
    return api[0]


def run(endpoint: str, *args: str, key: str | None = KEY):
    return CliRunner().invoke(
        cli, ["ingest", "mp", *args],
        env={"MP_API_KEY": key, "MP_API_ENDPOINT": endpoint},
    )


def db_digest(path: Path) -> str:
    h = hashlib.sha256()
    with duckdb.connect(str(path), read_only=True) as con:
        for table in TABLES:
            for row in sorted(map(repr, con.execute(f"SELECT * FROM {table}").fetchall())):
                h.update(row.encode())
    return h.hexdigest()


def rows(path: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def mp_db(api, tmp_path_factory) -> tuple[Path, object]:
    """Mn-O-Y ingested from the fake API (the first ingest of the module)."""
    fake, endpoint = api
    fake.requests.clear()
    path = tmp_path_factory.mktemp("mp") / "db.duckdb"
    result = run(endpoint, "--db", str(path), "--chemsys", "Y-O-Mn", "--format", "csv")
    assert result.exit_code == 0, result.output
    return path, (result, list(fake.requests))


@pytest.fixture(scope="module")
def entries_db(mp_dir: Path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("entries") / "db.duckdb"
    result = CliRunner().invoke(
        cli, ["--db", str(path), "ingest", "entries", str(mp_dir / "Mn_O_Y_entries.json.gz")]
    )
    assert result.exit_code == 0, result.output
    return path


def test_database_equals_ingest_entries_of_the_same_data(mp_db, entries_db: Path) -> None:
    path = mp_db[0]
    for sql in (
        "SELECT material_id, formula, chemsys, nsites, fingerprint FROM mp_materials",
        "SELECT material_id, n_atoms, energy_raw, correction_mp2020, energy_corrected, "
        "correction_in_source, compat_status, run_type FROM dft_entries",
        "SELECT material_id, e_per_atom, e_form_per_atom, e_above_hull FROM dft_stability",
        "SELECT material_id, spacegroup_number, dof FROM materials",
    ):
        mine, theirs = rows(path, sql + " ORDER BY 1"), rows(entries_db, sql + " ORDER BY 1")
        assert len(mine) == 132 and mine == theirs, sql


def test_whole_system_with_every_subsystem_and_nothing_else(mp_db) -> None:
    path, (result, requests) = mp_db
    thermo = [p for path_, p in requests if path_ == THERMO]
    assert len(thermo) == 1  # one query: every subsystem at once, GGA/GGA+U only
    assert sorted(thermo[0]["chemsys"].split(",")) == sorted(MN_O_Y)
    assert thermo[0]["thermo_types"] == "GGA_GGA+U"
    assert {p for p, _ in requests} <= {"/heartbeat", THERMO}
    stored = dict(rows(path, "SELECT chemsys, count(*) FROM mp_materials GROUP BY 1"))
    assert stored == {"Mn": 6, "O": 20, "Y": 4, "Mn-O": 64, "Mn-Y": 5, "O-Y": 20, "Mn-O-Y": 13}


def test_db_version_and_source_are_recorded(mp_db, api) -> None:
    path, (result, _) = mp_db
    endpoint = api[1]
    assert result.stdout == (
        "dataset,mp_db_version,chemsys,fetched,left_out,new,unchanged,rejected,"
        "symmetry_analyses,hull_entries\n"
        f"mp,{DB_VERSION},Mn-O-Y,132,0,132,0,0,132,132\n"
    )
    assert f"mp-api:chemsys=Mn-O-Y: 132 entries of 7 chemical system(s) (MP database " \
           f"{DB_VERSION})" in result.stderr
    fetch = rows(path, "SELECT sha256, dataset, chemsys, db_version, endpoint, thermo_type, "
                       "client, n_entries, n_skipped FROM mp_api_fetches")
    from importlib.metadata import version

    assert len(fetch) == 1
    sha = fetch[0][0]
    assert fetch[0][1:] == ("mp", "Mn-O-Y", DB_VERSION, endpoint, "GGA_GGA+U",
                            f"mp-api {version('mp-api')}", 132, 0)
    assert rows(path, "SELECT sha256, path, dataset, n_entries FROM source_files") == [
        (sha, "mp-api:chemsys=Mn-O-Y", "mp", 132)
    ]
    assert set(rows(path, "SELECT DISTINCT source_file, source_sha256 FROM dft_entries")) == {
        ("mp-api:chemsys=Mn-O-Y", sha)
    }


def test_second_fetch_changes_nothing(mp_db, fake: FakeMP, api) -> None:
    path = mp_db[0]
    before = db_digest(path)
    result = run(api[1], "--db", str(path), "--chemsys", "Mn-O-Y", "--chemsys", "O-Mn")
    assert result.exit_code == 0, result.output
    assert "0 new, 132 unchanged" in result.stderr and "hull unchanged" in result.stderr
    assert len(fake.thermo_requests()) == 1  # Mn-O comes with Mn-O-Y
    assert db_digest(path) == before


def test_material_id_brings_its_whole_system(fake: FakeMP, api, tmp_path: Path,
                                             mp_dir: Path) -> None:
    path = tmp_path / "db.duckdb"
    mn_y = next(d["material_id"] for d in fake.docs if d["chemsys"] == "Mn-Y")
    result = run(api[1], "--db", str(path), "--material-id", mn_y)
    assert result.exit_code == 0, result.output
    first = fake.thermo_requests()[0]
    assert first["material_ids"] == mn_y and first["_fields"] == "material_id,chemsys"
    expected = {e["entry_id"] for e in load(mp_dir, "Mn_O_Y_entries.json.gz")
                if set(e["composition"]) <= {"Mn", "Y"}}
    assert {r[0] for r in rows(path, "SELECT material_id FROM mp_materials")} == expected
    assert len(expected) == 15
    assert rows(path, "SELECT chemsys FROM mp_api_fetches") == [("Mn-Y",)]


def test_entries_without_structure_or_not_gga_are_left_out(tmp_path: Path,
                                                           mp_dir: Path) -> None:
    docs = [thermo_doc(e) for e in load(mp_dir, "Mn_O_Y_entries.json.gz")
            if set(e["composition"]) <= {"Mn", "Y"}]
    no_structure, r2scan, both = docs[0], docs[1], docs[2]
    del next(iter(no_structure["entries"].values()))["structure"]
    entry = r2scan["entries"].pop(next(iter(r2scan["entries"])))
    r2scan["entries"]["R2SCAN"] = {**entry, "parameters": {**entry["parameters"],
                                                           "run_type": "R2SCAN"}}
    gga_energy = next(iter(both["entries"].values()))["energy"]
    extra = copy.deepcopy(next(iter(both["entries"].values())))
    extra["parameters"]["run_type"] = "R2SCAN"
    extra["energy"] -= 10.0
    both["entries"]["R2SCAN"] = extra  # the GGA/GGA+U entry beside it is the one kept
    path = tmp_path / "db.duckdb"
    with serve(FakeMP(docs)) as endpoint:
        result = run(endpoint, "--db", str(path), "--chemsys", "Mn-Y", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert f"left out {no_structure['material_id']} (Mn-Y): entry without a structure\n" \
        in result.stderr
    assert f"left out {r2scan['material_id']} (Mn-Y): no GGA/GGA+U entry (R2SCAN)\n" \
        in result.stderr
    assert result.stdout.splitlines()[1] == f"mp,{DB_VERSION},Mn-Y,13,2,13,0,0,13,13"
    assert rows(path, "SELECT n_entries, n_skipped FROM mp_api_fetches") == [(13, 2)]
    kept = rows(path, f"SELECT run_type, energy_raw FROM dft_entries "
                      f"WHERE material_id = '{both['material_id']}'")
    assert kept == [(both["energy_type"], gga_energy)]


def test_another_mp_version_needs_another_dataset(mp_db, mp_dir: Path) -> None:
    path = mp_db[0]
    before = db_digest(path)
    newer = FakeMP([thermo_doc(e) for e in load(mp_dir, "Mn_O_Y_entries.json.gz")],
                   db_version="2026.01.01")
    with serve(newer) as endpoint:
        result = run(endpoint, "--db", str(path), "--chemsys", "Y")
        assert result.exit_code == 1
        assert result.stderr.splitlines()[-1] == (
            f"Error: dataset 'mp' holds MP database {DB_VERSION} but the API serves "
            "2026.01.01 - fetch into another dataset with --dataset NAME (one MP snapshot "
            "per dataset)"
        )
        assert db_digest(path) == before
        other = run(endpoint, "--db", str(path), "--chemsys", "Y", "--dataset", "mp-2026")
    assert other.exit_code == 0, other.output
    assert rows(path, "SELECT dataset, db_version, n_entries FROM mp_api_fetches "
                      "ORDER BY 1") == [("mp", DB_VERSION, 132), ("mp-2026", "2026.01.01", 4)]


def test_rate_limit_is_retried_then_succeeds(fake: FakeMP, api, tmp_path: Path) -> None:
    fake.fail = [429, 429]
    path = tmp_path / "db.duckdb"
    result = run(api[1], "--db", str(path), "--chemsys", "Y", "--retries", "2",
                 "--backoff", "0")
    assert result.exit_code == 0, result.output
    assert len(fake.thermo_requests()) == 3
    assert rows(path, "SELECT count(*) FROM mp_materials") == [(4,)]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FAILURES = {
    "no_key": (None, None, 0,
               "no Materials Project API key - set MP_API_KEY or pass --api-key KEY (your key "
               "is at https://materialsproject.org/api)"),
    "short_key": (None, None, 0,
                  "the API key has 5 characters, Materials Project keys have 32 - check "
                  "MP_API_KEY or --api-key (your key is at https://materialsproject.org/api)"),
    "401": (None, None, 1,
            "the Materials Project API rejected the API key (HTTP 401) - check MP_API_KEY or "
            "--api-key (your key is at https://materialsproject.org/api)"),
    "403": (None, None, 1,
            "the Materials Project API rejected the API key (HTTP 403) - check MP_API_KEY or "
            "--api-key (your key is at https://materialsproject.org/api)"),
    "429_forever": (None, 429, 3,
                    "the Materials Project API is rate limiting requests (HTTP 429), still "
                    "after 2 retries - wait a few minutes and run again (or raise "
                    "--retries/--backoff)"),
    "500": (None, 500, 1,
            "the Materials Project API failed with a server error (HTTP 500) - try again "
            "later (status: https://status.materialsproject.org)"),
    "503_forever": (None, 503, 3,
                    "the Materials Project API failed with a server error (HTTP 503) - try "
                    "again later (status: https://status.materialsproject.org)"),
    "refused": (None, None, 0,
                "cannot connect to the Materials Project API at {endpoint} (connection "
                "refused) - check the network connection, or --endpoint"),
    "bad_chemsys": (["--chemsys", "Mn-Xx"], None, 0,
                    "bad --chemsys 'Mn-Xx': 'Xx' is not an element - write elements joined "
                    "by '-', e.g. Li-Fe-O"),
    "unknown_id": (["--material-id", "mp-0"], None, 1,
                   "not on the Materials Project as GGA/GGA+U (no GGA_GGA+U thermo entry): "
                   "mp-0 - check the material id(s)"),
}


@pytest.mark.parametrize("existing", [False, True], ids=["new_db", "existing_db"])
@pytest.mark.parametrize("case", list(FAILURES))
def test_failure_is_one_line_and_writes_nothing(
    case: str, existing: bool, mp_db, fake: FakeMP, api, tmp_path: Path
) -> None:
    args, fail_always, n_thermo, message = FAILURES[case]
    endpoint = f"http://127.0.0.1:{_closed_port()}/" if case == "refused" else api[1]
    key = {"no_key": None, "short_key": "abcde", "401": WRONG_KEY, "403": WRONG_KEY}.get(
        case, KEY)
    fake.bad_key_status = 403 if case == "403" else 401
    fake.fail_always = fail_always
    path = mp_db[0] if existing else tmp_path / "new.duckdb"
    before = hashlib.sha256(path.read_bytes()).hexdigest() if existing else None
    result = run(endpoint, "--db", str(path), *(args or ["--chemsys", "Mn-O"]),
                 "--retries", "2", "--backoff", "0", key=key)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == f"Error: {message.format(endpoint=endpoint)}\n"
    assert len(fake.thermo_requests()) == n_thermo
    if existing:  # never opened: the file is byte for byte the same
        assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    else:
        assert not path.exists()


def test_broken_heartbeat_is_one_line(tmp_path: Path) -> None:
    class Down(FakeMP):
        def answer(self, path, params, key):
            if path == "/heartbeat":
                return 500, {"detail": "Internal Server Error"}
            return super().answer(path, params, key)

    path = tmp_path / "db.duckdb"
    with serve(Down([])) as endpoint:
        result = run(endpoint, "--db", str(path), "--chemsys", "Y")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: the Materials Project API at {endpoint} gave no valid /heartbeat answer (no "
        "'version' in it) - check --endpoint, or try again later\n"
    )
    assert not path.exists()
