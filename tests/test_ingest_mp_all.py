"""``mliapdb ingest mp --all``: every GGA/GGA+U thermo document, paged, from a real HTTP server
on 127.0.0.1 answering like the Materials Project API (``meta.total_doc``, ``_skip``/
``_limit``, ``_fields``) with 50,000+ synthetic documents made of the shared real MP entries
(small cells; ids renamed, structures and energies kept). A connection cut half-way ends the
run with one line and exit status 1, keeping the pages stored; the same command resumes and
ends with every material once, equal to an uninterrupted run; a finished run fetches nothing
again; a resume against another MP database version is refused."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from test_ingest_mp import (  # noqa: F401 (no_internet: the autouse fixture)
    DB_VERSION,
    KEY,
    THERMO,
    FakeMP,
    load,
    no_internet,
    rows,
    serve,
    thermo_doc,
)

from mliapdb.cli.main import cli

SNAPSHOT_FILES = ("Fe_Li_O_P_entries.json.gz", "Cl_Mn_Na_O_Y_entries.json.gz")  # one snapshot
MID = "__MID__"
STORED = (  # every stored table of an ingest, without its time stamps
    ("source_files", "sha256, path, dataset, n_entries"),
    ("mp_api_pages", "dataset, page_skip, page_limit, n_docs, total_doc, n_entries, n_skipped, "
                     "sha256, material_ids, db_version, endpoint, thermo_type, client"),
    ("mp_materials", "*"),
    ("dft_entries", "*"),
    ("symmetry_analyses", "*"),
    ("wyckoff_orbits", "*"),
    ("dft_hull", "dataset, material_id, e_per_atom, e_ref_per_atom, e_form_per_atom, "
                 "e_above_hull"),
)


def small_entries(mp_dir: Path, max_sites: int = 4) -> list[dict]:
    """The shared entries of one MP snapshot with at most ``max_sites`` sites, one per id."""
    found: dict[str, dict] = {}
    for name in SNAPSHOT_FILES:
        for entry in load(mp_dir, name):
            if len(entry["structure"]["sites"]) <= max_sites:
                found.setdefault(entry["entry_id"], entry)
    return [found[k] for k in sorted(found)]


def synthetic_id(i: int) -> str:
    return f"mp-{9_000_000 + i}"


class WholeMP(FakeMP):
    """Serves ``n`` thermo documents: document ``i`` is the shared small entry ``i % len``
    renamed ``synthetic_id(i)``; every ``r2scan_every``-th one holds an R2SCAN entry only
    (left out). Pages are JSON text built from per-template strings (no 50k dicts held)."""

    def __init__(self, templates: list[dict], n: int, r2scan_every: int = 0,
                 db_version: str = DB_VERSION) -> None:
        super().__init__([], db_version)
        self.n = n
        self.templates = [self._template(e) for e in templates]
        self.r2scan_every = r2scan_every
        r2scan = json.loads(json.dumps(templates[0]))
        r2scan["parameters"]["run_type"] = "R2SCAN"
        self.r2scan = self._template(r2scan)
        self.repeat: dict[int, int] = {}  # document index -> index whose id it carries

    @staticmethod
    def _template(entry: dict) -> str:
        """The served document of ``entry`` (fields material_id, entries), id ``MID``."""
        entry = {**entry, "entry_id": MID, "data": {**entry["data"]}}
        entry["data"].pop("material_id", None)
        return json.dumps({"material_id": MID, "entries": thermo_doc(entry)["entries"]})

    def is_r2scan(self, i: int) -> bool:
        return bool(self.r2scan_every) and i % self.r2scan_every == self.r2scan_every - 1

    def doc_id(self, i: int) -> str:
        return synthetic_id(self.repeat.get(i, i))

    def doc(self, i: int) -> str:
        template = self.r2scan if self.is_r2scan(i) else self.templates[i % len(self.templates)]
        return template.replace(f'"{MID}"', f'"{self.doc_id(i)}"')

    def answer(self, path, params, key):
        if path != THERMO or key != KEY or self.fail or self.fail_always:
            return super().answer(path, params, key)
        self.requests.append((path, params))
        assert params.get("thermo_types") == "GGA_GGA+U"
        assert params.get("_fields") == "material_id,entries"
        skip, limit = int(params.get("_skip", 0)), int(params.get("_limit", 1000))
        docs = ",".join(self.doc(i) for i in range(skip, min(skip + limit, self.n)))
        meta = {"api_version": "0.87.3", "time_stamp": "2025-09-25T00:00:00",
                "total_doc": self.n, "max_limit": 1000}
        return 200, f'{{"data":[{docs}],"meta":{json.dumps(meta)}}}'.encode()

    def expected_ids(self) -> set[str]:
        return {self.doc_id(i) for i in range(self.n) if not self.is_r2scan(i)}


def run_all(endpoint: str, path: Path, *args: str, key: str = KEY):
    return CliRunner().invoke(
        cli, ["--db", str(path), "ingest", "mp", "--all", "--backoff", "0", *args],
        env={"MP_API_KEY": key, "MP_API_ENDPOINT": endpoint},
    )


def stored_digest(path: Path) -> dict[str, str]:
    """sha256 of each stored table's sorted rows (time stamps left out)."""
    out = {}
    with duckdb.connect(str(path), read_only=True) as con:
        for table, columns in STORED:
            h = hashlib.sha256()
            for row in sorted(map(repr, con.execute(f"SELECT {columns} FROM {table}").fetchall())):
                h.update(row.encode())
            out[table] = h.hexdigest()
    return out


def thermo_skips(fake: FakeMP) -> list[int]:
    return [int(p.get("_skip", 0)) for p in fake.thermo_requests()]


@pytest.fixture(scope="module")
def templates(mp_dir: Path) -> list[dict]:
    return small_entries(mp_dir)


@pytest.fixture
def small(templates) -> Iterator[tuple[WholeMP, str]]:
    """1,230 documents (every 97th left out), served fresh for each test."""
    fake = WholeMP(templates, 1230, r2scan_every=97)
    with serve(fake) as endpoint:
        yield fake, endpoint


def test_resumed_runs_equal_an_uninterrupted_one(small, tmp_path: Path) -> None:
    fake, endpoint = small
    whole = tmp_path / "whole.duckdb"
    result = run_all(endpoint, whole, "--page-size", "100", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert thermo_skips(fake) == list(range(0, 1230, 100))
    n_left = sum(fake.is_r2scan(i) for i in range(1230))
    assert n_left == 12
    assert result.stdout == (
        "dataset,mp_db_version,documents,total,pages,entries,left_out,new,unchanged,rejected,"
        f"symmetry_analyses,hull_entries\nmp,{DB_VERSION},1230,1230,13,1218,12,1218,0,0,1218,"
        "1218\n")
    assert f"left out {synthetic_id(96)}: no GGA/GGA+U entry (R2SCAN)\n" in result.stderr

    # cut mid-page at document 500 (page 500-599 breaks off half-way, twice), resume; a
    # server error at document 900, resume again
    path = tmp_path / "resumed.duckdb"
    fake.requests.clear()
    fake.cut_from = 500
    cut = run_all(endpoint, path, "--page-size", "100", "--retries", "1")
    assert cut.exit_code == 1 and cut.stdout == ""
    assert cut.stderr.splitlines()[-1] == (
        f"Error: the connection to the Materials Project API at {endpoint} broke off while it "
        "sent documents 500-599 (still after 1 retries) - check the network connection; 500 "
        "of 1230 documents are stored in dataset 'mp', the same command resumes after them")
    assert fake.n_cuts == 2 and thermo_skips(fake) == [0, 100, 200, 300, 400, 500, 500]
    assert rows(path, "SELECT count(*), count(DISTINCT material_id) FROM mp_materials") \
        == [(495, 495)]
    assert rows(path, "SELECT count(*) FROM dft_hull") == [(495,)]  # rebuilt for what is stored
    fake.cut_from, fake.fail_always = None, None
    fake.fail = []
    fake.requests.clear()

    def fail_at_900(path_, params, key, answer=fake.answer):
        if path_ == THERMO and params.get("_skip") == "900":
            fake.requests.append((path_, params))
            return 500, {"detail": "failure 500"}
        return answer(path_, params, key)

    fake.answer = fail_at_900
    second = run_all(endpoint, path, "--page-size", "100", "--retries", "0")
    assert second.exit_code == 1
    assert second.stderr.splitlines()[-1] == (
        "Error: the Materials Project API failed with a server error (HTTP 500) - try again "
        "later (status: https://status.materialsproject.org); 900 of 1230 documents are stored "
        "in dataset 'mp', the same command resumes after them")
    assert thermo_skips(fake) == [500, 600, 700, 800, 900]
    del fake.answer
    fake.requests.clear()
    third = run_all(endpoint, path, "--page-size", "100")
    assert third.exit_code == 0, third.output
    assert thermo_skips(fake) == [900, 1000, 1100, 1200]
    assert stored_digest(path) == stored_digest(whole)
    assert {r[0] for r in rows(path, "SELECT material_id FROM mp_materials")} \
        == fake.expected_ids()


def test_finished_run_fetches_nothing_and_changes_nothing(small, tmp_path: Path) -> None:
    fake, endpoint = small
    path = tmp_path / "db.duckdb"
    assert run_all(endpoint, path, "--page-size", "500").exit_code == 0
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    fake.requests.clear()
    again = run_all(endpoint, path, "--page-size", "500", "--format", "csv")
    assert again.exit_code == 0, again.output
    assert fake.thermo_requests() == []
    assert again.stderr == (f"{path}: dataset 'mp' holds all 1230 GGA/GGA+U documents of MP "
                            f"database {DB_VERSION} - nothing to fetch\n")
    assert again.stdout.splitlines()[1] == f"mp,{DB_VERSION},1230,1230,0,0,0,0,0,0,0,"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_resume_against_another_mp_version_is_refused(small, templates,
                                                      tmp_path: Path) -> None:
    fake, endpoint = small
    path = tmp_path / "db.duckdb"
    fake.cut_from = 300
    assert run_all(endpoint, path, "--page-size", "100", "--retries", "0").exit_code == 1
    before = stored_digest(path)
    newer = WholeMP(templates, 1230, r2scan_every=97, db_version="2026.01.01")
    with serve(newer) as other:
        result = run_all(other, path, "--page-size", "100")
        assert result.exit_code == 1
        assert result.stderr.splitlines()[-1] == (
            f"Error: dataset 'mp' holds MP database {DB_VERSION} (an unfinished --all run: 300 "
            "of 1230 documents) but the API serves 2026.01.01 - fetch it into another dataset "
            "with --dataset NAME (one MP snapshot per dataset)")
        assert newer.thermo_requests() == []
        assert stored_digest(path) == before
        chemsys = CliRunner().invoke(
            cli, ["--db", str(path), "ingest", "mp", "--chemsys", "Li"],
            env={"MP_API_KEY": KEY, "MP_API_ENDPOINT": other})
    assert chemsys.exit_code == 1  # the pages' version holds for every fetch of the dataset
    assert chemsys.stderr.splitlines()[-1] == (
        f"Error: dataset 'mp' holds MP database {DB_VERSION} but the API serves 2026.01.01 - "
        "fetch into another dataset with --dataset NAME (one MP snapshot per dataset)")


def test_resume_against_another_total_is_refused(small, templates, tmp_path: Path) -> None:
    fake, endpoint = small
    path = tmp_path / "db.duckdb"
    fake.cut_from = 300
    assert run_all(endpoint, path, "--page-size", "100", "--retries", "0").exit_code == 1
    before = stored_digest(path)
    grown = WholeMP(templates, 1240, r2scan_every=97)  # same version, ten documents more
    with serve(grown) as other:
        result = run_all(other, path, "--page-size", "100")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        f"Error: the Materials Project API claims 1240 GGA_GGA+U documents of MP database "
        f"{DB_VERSION}, the stored pages of dataset 'mp' 1230 of the same version - fetch it "
        "into another dataset with --dataset NAME")
    assert [int(p["_skip"]) for p in grown.thermo_requests()] == [300]
    assert stored_digest(path) == before


def test_resumed_page_repeating_a_stored_document_is_refused(small, tmp_path: Path) -> None:
    fake, endpoint = small
    path = tmp_path / "db.duckdb"
    fake.cut_from = 200
    assert run_all(endpoint, path, "--page-size", "100", "--retries", "0").exit_code == 1
    fake.cut_from = None
    fake.repeat = {250: 10}  # the server's order moved: document 10 comes again
    before = stored_digest(path)
    result = run_all(endpoint, path, "--page-size", "100")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        f"Error: the Materials Project API at {endpoint}materials/thermo/ pages "
        f"inconsistently: it served {synthetic_id(10)} twice (pages repeat) - refused; the "
        "pages before it are stored; try again later, or check --endpoint; 200 of 1230 "
        "documents are stored in dataset 'mp', the same command resumes after them")
    assert stored_digest(path) == before


def test_all_with_chemsys_is_a_usage_error(small, tmp_path: Path) -> None:
    result = run_all(small[1], tmp_path / "db.duckdb", "--chemsys", "Li")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        "Error: pass --all, or --chemsys/--material-id, not both")
    assert not (tmp_path / "db.duckdb").exists()


def test_failure_before_any_page_leaves_no_file(small, tmp_path: Path) -> None:
    fake, endpoint = small
    fake.fail_always = 503
    path = tmp_path / "db.duckdb"
    result = run_all(endpoint, path, "--retries", "1")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: the Materials Project API failed with a server error (HTTP 503) - try again "
        "later (status: https://status.materialsproject.org)\n")
    assert not path.exists()


@pytest.mark.slow
def test_50k_documents_cut_half_way_then_resumed(templates, tmp_path: Path) -> None:
    n = 50_400
    fake = WholeMP(templates, n, r2scan_every=5_000)
    path = tmp_path / "db.duckdb"
    with serve(fake) as endpoint:
        fake.cut_from = 25_000
        cut = run_all(endpoint, path, "--retries", "2")
        assert cut.exit_code == 1 and cut.stdout == ""
        assert cut.stderr.splitlines()[-1] == (
            f"Error: the connection to the Materials Project API at {endpoint} broke off while "
            "it sent documents 25000-25999 (still after 2 retries) - check the network "
            f"connection; 25000 of {n} documents are stored in dataset 'mp', the same command "
            "resumes after them")
        assert "mp-api:all: 25000/50400 (50 %)" in cut.stderr
        assert rows(path, "SELECT count(*), sum(n_docs) FROM mp_api_pages") == [(25, 25_000)]
        fake.cut_from = None
        fake.requests.clear()
        resumed = run_all(endpoint, path, "--format", "csv")
        assert resumed.exit_code == 0, resumed.output
        assert thermo_skips(fake) == list(range(25_000, n, 1000))
        n_materials = n - 10
        assert resumed.stdout.splitlines()[1] == (
            f"mp,{DB_VERSION},{n},{n},26,{n - 25_000 - 5},5,{n - 25_000 - 5},0,0,"
            f"{n - 25_000 - 5},{n_materials}")
        fake.requests.clear()
        again = run_all(endpoint, path)
        assert again.exit_code == 0 and fake.thermo_requests() == []
    for table in ("mp_materials", "dft_entries", "dft_hull"):
        assert rows(path, f"SELECT count(*), count(DISTINCT material_id) FROM {table}") \
            == [(n_materials, n_materials)], table
    assert {r[0] for r in rows(path, "SELECT material_id FROM mp_materials")} \
        == fake.expected_ids()
    # each document's real entry, renamed: raw energy and structure kept; its Ehull that of
    # its template in an 'ingest entries' of the templates alone (copies do not move a hull)
    reference = tmp_path / "templates.json.gz"
    with gzip.open(reference, "wt") as fh:
        json.dump(templates, fh)
    ref_db = tmp_path / "ref.duckdb"
    assert CliRunner().invoke(cli, ["--db", str(ref_db), "ingest", "entries",
                                    str(reference)]).exit_code == 0
    ref = {mid: (e, ehull) for mid, e, ehull in rows(
        ref_db, "SELECT e.material_id, e.energy_raw, h.e_above_hull FROM dft_entries e "
                "JOIN dft_hull h USING (dataset, material_id)")}
    got = rows(path, "SELECT e.material_id, e.energy_raw, h.e_above_hull FROM dft_entries e "
                     "JOIN dft_hull h USING (dataset, material_id)")
    names = [t["entry_id"] for t in templates]
    for mid, energy, ehull in got:
        i = int(mid.removeprefix("mp-")) - 9_000_000
        want_energy, want_ehull = ref[names[i % len(names)]]
        assert energy == want_energy
        assert ehull == pytest.approx(want_ehull, abs=1e-9) if want_ehull is not None \
            else ehull is None
