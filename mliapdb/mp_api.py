"""Fetch the GGA/GGA+U entries of whole chemical systems, every subsystem included (so hulls
are complete), from the Materials Project API with the official ``mp-api`` client.

The entries come from the thermo documents (``MPRester.materials.thermo.search``, the call
behind ``get_entries_in_chemsys``) as the raw ``ComputedStructureEntry`` dicts the API
served, so they take the same path as entry files (:func:`mliapdb.entries.load_entries`).
Entries without a structure or of another functional are left out and reported. HTTP
failures become one-line :class:`MliapdbError` messages; 429 and 502-504 answers are retried
a bounded number of times with exponential backoff (or the server's ``Retry-After``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mliapdb.config import MP_API_ENDPOINT
from mliapdb.errors import MliapdbError
from mliapdb.ingest import Progress, no_progress

if TYPE_CHECKING:
    import duckdb

THERMO_TYPE = "GGA_GGA+U"
GGA_RUN_TYPES = ("GGA+U", "GGA")  # preference when a document holds both (as MP's builder)
RETRY_STATUSES = (429, 502, 503, 504)
KEY_URL = "https://materialsproject.org/api"
MAX_ELEMENTS = 9  # mp-api refuses more (2^9 - 1 subsystems in one query)
_MATERIAL_ID = re.compile(r"^[a-z]+-[0-9a-z]+$")


@dataclass
class ChemsysFetch:
    """The entries of one chemical system and its subsystems, in canonical order."""

    chemsys: str
    entries: list[dict]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # material id, reason

    @property
    def source(self) -> str:
        """The ``source_files.path`` of this fetch."""
        return f"mp-api:chemsys={self.chemsys}"

    @property
    def sha256(self) -> str:
        """sha256 of the canonical JSON of the entries (sorted keys, no spaces)."""
        blob = json.dumps(self.entries, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class MpFetch:
    """What one ``fetch_entries`` got: the systems and the MP database version served."""

    endpoint: str
    db_version: str | None
    client: str
    systems: list[ChemsysFetch]

    @property
    def sources(self) -> list[tuple[str, str, list[dict]]]:
        """``(source, sha256, entries)`` of each system, for :func:`load_entries`."""
        return [(s.source, s.sha256, s.entries) for s in self.systems]


def normalize_chemsys(text: str) -> str:
    """``'Li-Fe-O'`` -> ``'Fe-Li-O'``; unknown elements and too many elements are refused."""
    from pymatgen.core import Element

    symbols = [s.strip() for s in text.split("-")]
    for symbol in symbols:
        if not Element.is_valid_symbol(symbol):
            raise MliapdbError(
                f"bad --chemsys {text!r}: {symbol!r} is not an element - write elements "
                "joined by '-', e.g. Li-Fe-O"
            )
    unique = sorted(set(symbols))
    if len(unique) > MAX_ELEMENTS:
        raise MliapdbError(
            f"--chemsys {text!r} has {len(unique)} elements; the MP API serves at most "
            f"{MAX_ELEMENTS} at once - ask for smaller systems"
        )
    return "-".join(unique)


def subsystems(chemsys: str) -> list[str]:
    """Every non-empty subsystem of a chemical system, the system itself included."""
    elements = chemsys.split("-")
    return [
        "-".join(combo)
        for n in range(1, len(elements) + 1)
        for combo in itertools.combinations(elements, n)
    ]


def maximal_systems(systems: Iterable[str]) -> list[str]:
    """The systems not inside another one of them (their entries come with the larger)."""
    sets = {s: set(s.split("-")) for s in systems}
    return sorted(s for s, els in sets.items() if not any(els < o for o in sets.values()))


def _session(api_key: str, retries: int, backoff: float, statuses: list[int]):
    """A requests session sending the key, retrying rate limits and gateway errors, and
    recording every response's status (the client reports failures as text only)."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    from mliapdb import __version__

    session = requests.Session()
    session.headers.update(
        {"x-api-key": api_key, "user-agent": f"mliapdb/{__version__} ({_client()})"}
    )
    retry = Retry(
        total=retries,
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff,
        respect_retry_after_header=True,
        raise_on_status=False,  # the last answer reaches the client, which raises
        allowed_methods=frozenset({"GET"}),
    )
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.hooks["response"].append(lambda response, *a, **k: statuses.append(
        response.status_code))
    return session


def _client() -> str:
    from importlib.metadata import version

    return f"mp-api {version('mp-api')}"


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _http_error(exc: Exception, endpoint: str, status: int | None, retries: int) -> MliapdbError:
    """The one-line error for a failed request (``status``: the last HTTP answer, if any)."""
    import requests

    text = str(exc)
    if status in (401, 403):
        return MliapdbError(
            f"the Materials Project API rejected the API key (HTTP {status}) - check "
            f"MP_API_KEY or --api-key (your key is at {KEY_URL})"
        )
    if status == 429:
        return MliapdbError(
            f"the Materials Project API is rate limiting requests (HTTP 429), still after "
            f"{retries} retries - wait a few minutes and run again (or raise --retries/--backoff)"
        )
    if status is not None and status >= 500:
        return MliapdbError(
            f"the Materials Project API failed with a server error (HTTP {status}) - try again "
            "later (status: https://status.materialsproject.org)"
        )
    if status is not None and status >= 400:
        detail = text.split("with message:", 1)[-1].strip().splitlines()
        return MliapdbError(
            f"the Materials Project API refused the request (HTTP {status}: "
            f"{detail[0] if detail else 'no message'}) - check --chemsys/--material-id"
        )
    chain = list(_chain(exc))
    if any(isinstance(e, requests.Timeout) for e in chain):
        return MliapdbError(
            f"the Materials Project API at {endpoint} did not answer in time - try again later"
        )
    if any(isinstance(e, requests.ConnectionError) for e in chain):
        errno = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
        reason = errno.group(1).strip().lower() if errno else "no connection"
        return MliapdbError(
            f"cannot connect to the Materials Project API at {endpoint} ({reason}) - check "
            "the network connection, or --endpoint"
        )
    return MliapdbError(f"Materials Project API: {text.splitlines()[0] if text else exc!r}")


@contextmanager
def _requests(endpoint: str, statuses: list[int], retries: int) -> Iterator[None]:
    """Turn the client's errors of the requests made inside into one-line errors."""
    import requests
    from mp_api.client import MPRestError

    statuses.clear()
    try:
        yield
    except (MPRestError, requests.RequestException) as exc:
        status = statuses[-1] if statuses and statuses[-1] >= 400 else None
        raise _http_error(exc, endpoint, status, retries) from exc


def _open(api_key: str, endpoint: str, retries: int, backoff: float, statuses: list[int]):
    """An ``MPRester`` on ``endpoint`` (it reads the ``/heartbeat`` for the database version)."""
    import requests
    from mp_api.client import MPRester, MPRestError

    session = _session(api_key, retries, backoff, statuses)
    try:
        return MPRester(
            api_key=api_key, endpoint=endpoint, session=session, use_document_model=False,
            mute_progress_bars=True,
        )
    except (MPRestError, requests.ConnectionError, requests.Timeout) as exc:
        raise _http_error(exc, endpoint, None, retries) from exc
    except (KeyError, ValueError) as exc:  # a heartbeat without version or not JSON
        what = f"no {exc.args[0]!r} in it" if isinstance(exc, KeyError) else "not JSON"
        raise MliapdbError(
            f"the Materials Project API at {endpoint} gave no valid /heartbeat answer "
            f"({what}) - check --endpoint, or try again later"
        ) from exc


def _run_type(key: str, entry: dict) -> str:
    params = entry.get("parameters")
    return (params.get("run_type") if isinstance(params, dict) else None) or key


def pick_entry(doc: dict) -> tuple[dict | None, str | None]:
    """The GGA/GGA+U entry of one thermo document, or ``None`` and why it is left out."""
    entries = doc.get("entries") or {}
    gga = {
        _run_type(k, e): e for k, e in entries.items()
        if isinstance(e, dict) and _run_type(k, e) in GGA_RUN_TYPES
    }
    if not gga:
        others = ", ".join(sorted(_run_type(k, e) if isinstance(e, dict) else k
                                  for k, e in entries.items()))
        return None, f"no GGA/GGA+U entry ({others or 'no entries'})"
    entry = next(gga[t] for t in GGA_RUN_TYPES if t in gga)
    if not isinstance(entry.get("structure"), dict):
        return None, "entry without a structure"
    data = entry.get("data")
    if not isinstance(data, dict):
        entry["data"] = data = {}
    if not data.get("material_id"):  # the document's id names the entry
        data["material_id"] = doc.get("material_id")
    return entry, None


def _fetch_chemsys(mpr, chemsys: str) -> ChemsysFetch:
    docs = mpr.materials.thermo.search(
        chemsys=subsystems(chemsys), thermo_types=[THERMO_TYPE], all_fields=False,
        fields=["material_id", "entries"],
    )
    chosen: dict[str, dict] = {}
    skipped: list[tuple[str, str]] = []
    for doc in sorted(docs, key=lambda d: str(d.get("material_id"))):
        mid = str(doc.get("material_id"))
        entry, why = pick_entry(doc)
        if entry is None:
            skipped.append((mid, why or ""))
        else:
            chosen.setdefault(mid, entry)
    return ChemsysFetch(chemsys, [chosen[m] for m in sorted(chosen)], skipped)


def _chemsys_of_ids(mpr, material_ids: Sequence[str]) -> list[str]:
    """The chemical system of each material id (all must be on MP as GGA/GGA+U)."""
    from mp_api.client.core.utils import validate_ids

    bad = [m for m in material_ids if not _MATERIAL_ID.match(m)]
    if bad:
        raise MliapdbError(f"bad material id {bad[0]!r} - MP ids look like mp-149")
    wanted = dict(zip(validate_ids(list(material_ids)), material_ids, strict=True))
    docs = mpr.materials.thermo.search(
        material_ids=list(wanted), thermo_types=[THERMO_TYPE], all_fields=False,
        fields=["material_id", "chemsys"],
    )
    found = {str(d.get("material_id")): d.get("chemsys") for d in docs}
    missing = [orig for norm, orig in wanted.items() if not found.get(norm)]
    if missing:
        raise MliapdbError(
            f"not on the Materials Project as GGA/GGA+U (no {THERMO_TYPE} thermo entry): "
            f"{', '.join(missing)} - check the material id(s)"
        )
    return [found[norm] for norm in wanted]


def fetch_entries(
    api_key: str | None,
    chemsys: Sequence[str] = (),
    material_ids: Sequence[str] = (),
    endpoint: str = MP_API_ENDPOINT,
    retries: int = 5,
    backoff: float = 0.5,
    progress: Progress = no_progress,
) -> MpFetch:
    """GGA/GGA+U entries of each requested system (``--chemsys``) and of the systems of the
    requested materials, each with all its subsystems; one-line errors on any failure."""
    if not chemsys and not material_ids:
        raise MliapdbError("nothing to fetch - pass --chemsys SYSTEM or --material-id ID")
    if retries < 0 or backoff < 0:
        raise MliapdbError("--retries and --backoff must not be negative")
    systems = [normalize_chemsys(c) for c in chemsys]
    if not api_key:
        raise MliapdbError(
            f"no Materials Project API key - set MP_API_KEY or pass --api-key KEY (your key "
            f"is at {KEY_URL})"
        )
    if len(api_key) != 32:
        raise MliapdbError(
            f"the API key has {len(api_key)} characters, Materials Project keys have 32 - "
            f"check MP_API_KEY or --api-key (your key is at {KEY_URL})"
        )
    try:
        import mp_api.client  # noqa: F401
    except ImportError as exc:
        raise MliapdbError(
            f"the Materials Project API client is not installed ({exc}) - pip install "
            "'mliapdb[mp]'"
        ) from exc
    endpoint = endpoint if endpoint.endswith("/") else endpoint + "/"
    statuses: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mp-api's notices; failures raise
        mpr = _open(api_key, endpoint, retries, backoff, statuses)
        try:
            if material_ids:
                with _requests(endpoint, statuses, retries):
                    ids_systems = _chemsys_of_ids(mpr, material_ids)
                systems += [normalize_chemsys(c) for c in ids_systems]
            fetched = []
            todo = maximal_systems(systems)
            for cs in progress(todo, len(todo), "MP API"):
                with _requests(endpoint, statuses, retries):
                    got = _fetch_chemsys(mpr, cs)
                if not got.entries:
                    raise MliapdbError(
                        f"the Materials Project API has no GGA/GGA+U entries with structures "
                        f"in {cs} or its subsystems ({len(got.skipped)} left out) - check "
                        "--chemsys"
                    )
                fetched.append(got)
        finally:
            mpr.session.close()
    return MpFetch(endpoint, mpr.db_version or None, _client(), fetched)


def check_snapshot(con: duckdb.DuckDBPyConnection, dataset: str, db_version: str | None) -> None:
    """Refuse to add a fetch of another MP database version to a dataset (one snapshot each)."""
    stored = {
        v for (v,) in con.execute(
            "SELECT DISTINCT db_version FROM mp_api_fetches WHERE dataset = ? "
            "AND db_version IS NOT NULL", [dataset]
        ).fetchall()
    }
    other = sorted(stored - {db_version}) if db_version else []
    if other:
        raise MliapdbError(
            f"dataset '{dataset}' holds MP database {other[0]} but the API serves {db_version} "
            f"- fetch into another dataset with --dataset NAME (one MP snapshot per dataset)"
        )


def fetch_rows(con: duckdb.DuckDBPyConnection, fetch: MpFetch, dataset: str) -> list[dict]:
    """The ``mp_api_fetches`` rows of a fetch's systems new to the dataset, for the ingest
    transaction; a dataset holding another MP database version is refused first."""
    from mliapdb.db import now
    from mliapdb.tables import MpApiFetch

    check_snapshot(con, dataset, fetch.db_version)
    known = {
        sha for (sha,) in con.execute(
            "SELECT sha256 FROM mp_api_fetches WHERE dataset = ?", [dataset]
        ).fetchall()
    }
    stamp = now()
    rows = {
        s.sha256: MpApiFetch(
            sha256=s.sha256, dataset=dataset, chemsys=s.chemsys, db_version=fetch.db_version,
            endpoint=fetch.endpoint, thermo_type=THERMO_TYPE, client=fetch.client,
            n_entries=len(s.entries), n_skipped=len(s.skipped), fetched_at=stamp,
        ).model_dump()
        for s in fetch.systems
        if s.sha256 not in known
    }
    return list(rows.values())
