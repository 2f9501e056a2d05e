"""Fetch the GGA/GGA+U entries of whole chemical systems, every subsystem included (so hulls
are complete), from the Materials Project API with the official ``mp-api`` client.

The entries come from the thermo documents (``MPRester.materials.thermo.search``, the call
behind ``get_entries_in_chemsys``) as the raw ``ComputedStructureEntry`` dicts the API
served, so they take the same path as entry files (:func:`mliapdb.materials.entries.load_entries`).
Entries without a structure or of another functional are left out and reported. HTTP
failures become one-line :class:`MliapdbError` messages; 429 and 502-504 answers are retried
a bounded number of times with exponential backoff (or the server's ``Retry-After``).

Every answer is bounded and checked before the client sees it (:class:`ApiBounds`, one
requests adapter under the client): at most ``max_answer_bytes`` within
``answer_deadline_s``; JSON of the documented shape; a query may claim at most ``max_docs``
documents, and its pages must add up to what the first answer claims (same count on every
page, full pages, no document twice), so the requests of one query are bounded by
``ceil(total / page size)``. A malformed answer is a one-line error naming the endpoint.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import time
import urllib.parse
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mliapdb.config import MP_API_ENDPOINT
from mliapdb.errors import MliapdbError
from mliapdb.progress import Progress, no_progress

if TYPE_CHECKING:
    import duckdb

THERMO_TYPE = "GGA_GGA+U"
GGA_RUN_TYPES = ("GGA+U", "GGA")  # preference when a document holds both (as MP's builder)
RETRY_STATUSES = (429, 502, 503, 504)
KEY_URL = "https://materialsproject.org/api"
MAX_ELEMENTS = 9  # mp-api refuses more (2^9 - 1 subsystems in one query)
_MATERIAL_ID = re.compile(r"^[a-z]+-[0-9a-z]+$")


@dataclass(frozen=True)
class ApiBounds:
    """What one ``ingest mp`` takes from the API at most.

    ``max_docs``: documents one query may claim (``meta.total_doc``): MP holds about 160,000
    materials, and the largest chemical systems with all their subsystems a few thousand;
    ``max_all_docs``: documents the whole-MP query of ``ingest mp --all`` may claim (MP's
    GGA/GGA+U thermo documents: about 154,000 in 2025);
    ``page_size``: documents asked per request (mp-api's chunk size, MP's ``max_limit``);
    ``max_answer_bytes``: bytes of one answer, decoded; ``answer_deadline_s``: seconds one
    answer may take to arrive in all; ``timeout_s``: seconds a connection or read may wait.
    """

    max_docs: int = 50_000
    max_all_docs: int = 1_000_000
    page_size: int = 1000
    max_answer_bytes: int = 256 << 20
    answer_deadline_s: float = 300.0
    timeout_s: float = 60.0


DEFAULT_BOUNDS = ApiBounds()


def entries_sha256(entries: list[dict]) -> str:
    """sha256 of the canonical JSON of fetched entries (sorted keys, no spaces)."""
    blob = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


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
        """:func:`entries_sha256` of the entries."""
        return entries_sha256(self.entries)


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


def _session(api_key: str, retries: int, backoff: float, statuses: list[int],
             guard: _AnswerGuard | None = None):
    """A requests session sending the key, retrying rate limits and gateway errors, and
    recording every response's status (the client reports failures as text only); each
    answer bounded and checked by ``guard``."""
    import requests
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
    adapter = _bounded_adapter(guard or _AnswerGuard(DEFAULT_BOUNDS), max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.hooks["response"].append(lambda response, *a, **k: statuses.append(
        response.status_code))
    return session


def _bounded_adapter(guard: _AnswerGuard, **kwargs):
    """A requests ``HTTPAdapter`` that reads every body itself, bounded in bytes and time,
    and hands each answer to ``guard`` before the client sees it."""
    from requests.adapters import HTTPAdapter

    class BoundedAdapter(HTTPAdapter):
        def send(self, request, stream=False, timeout=None, **kw):
            timeout = guard.bounds.timeout_s if timeout is None else timeout
            response = super().send(request, stream=True, timeout=timeout, **kw)
            if not stream:
                guard.read(response)
                guard.check(response)
            return response

    return BoundedAdapter(**kwargs)


class _AnswerGuard:
    """Reads and checks every answer of one fetch (see the module's docstring); the paging
    state of each query (its parameters but ``_skip``/``_limit``) lives here.

    ``whole``: the guard of ``ingest mp --all``, whose one query may claim up to
    ``max_all_docs`` documents and whose earlier pages are stored; ``seen``: the ids its
    pages served before (a resumed run: a page repeating one is refused). ``cuts`` counts the
    answers that broke off (cut connection, bad chunking, read timeout) before their end."""

    def __init__(self, bounds: ApiBounds, whole: bool = False,
                 seen: Iterable[str] = ()) -> None:
        self.bounds = bounds
        self.whole = whole
        self.seen = set(seen)
        self.cuts = 0
        self.queries: dict[tuple, dict] = {}

    def read(self, response) -> None:
        """The body of ``response``, at most ``max_answer_bytes`` within the deadline."""
        import requests
        from urllib3.exceptions import HTTPError as Urllib3Error
        from urllib3.exceptions import ReadTimeoutError

        where = _where(response.url)
        end = time.monotonic() + self.bounds.answer_deadline_s
        chunks: list[bytes] = []
        got = 0
        try:
            while chunk := response.raw.read1(1 << 16, decode_content=True):
                chunks.append(chunk)
                got += len(chunk)
                if got > self.bounds.max_answer_bytes:
                    raise MliapdbError(
                        f"the Materials Project API at {where} sent more than "
                        f"{self.bounds.max_answer_bytes >> 20} MiB in one answer - refused; "
                        "check --endpoint")
                if time.monotonic() > end:
                    raise MliapdbError(
                        f"the Materials Project API at {where} took more than "
                        f"{self.bounds.answer_deadline_s:g} s for one answer ({got} bytes so "
                        "far) - try again later, or check --endpoint")
        except ReadTimeoutError as exc:
            self.cuts += 1
            raise requests.exceptions.ReadTimeout(str(exc), response=response) from exc
        except Urllib3Error as exc:  # cut connection, bad chunking, broken gzip
            self.cuts += 1
            raise requests.exceptions.ConnectionError(str(exc), response=response) from exc
        finally:
            response.raw.release_conn()
        response._content = b"".join(chunks)
        response._content_consumed = True

    def check(self, response) -> None:
        """Refuse a malformed or inconsistent answer; an error answer's body is reduced to a
        printable ``{"detail": ...}`` for the client's message."""
        url = urllib.parse.urlsplit(response.url)
        where = _where(response.url)
        if url.path.rstrip("/").endswith("heartbeat"):
            if response.status_code != 403:  # the client's "no access" case
                _check_heartbeat(self._json(response, where, heartbeat=True), where)
        elif response.status_code >= 400:
            detail = None
            try:
                body = json.loads(response.content)
                detail = body.get("detail") if isinstance(body, dict) else None
            except (ValueError, RecursionError):
                pass
            if isinstance(detail, list) and all(  # FastAPI's validation errors
                    isinstance(e, dict) and isinstance(e.get("loc"), list)
                    and len(e["loc"]) > 1 for e in detail):
                detail = ", ".join(f"{e['loc'][1]} - {e.get('msg')}" for e in detail)
            if not isinstance(detail, str):
                detail = response.content[:200].decode("utf-8", "replace") or "no message"
            response._content = json.dumps({"detail": _printable(detail)[:300]}).encode()
        elif response.status_code == 200:
            self._page(self._json(response, where), url.query, where)

    @staticmethod
    def _json(response, where: str, heartbeat: bool = False) -> Any:
        try:
            return json.loads(response.content)
        except (ValueError, RecursionError) as exc:
            start = response.content[:40].decode("utf-8", "replace")
            if heartbeat:
                raise MliapdbError(
                    f"the Materials Project API at {where.removesuffix('heartbeat')} gave no "
                    f"valid /heartbeat answer (not JSON: {_printable(start)!r}) - check "
                    "--endpoint, or try again later") from exc
            raise MliapdbError(
                f"the Materials Project API at {where} answered with something that is not "
                f"JSON ({_printable(start)!r}...) - check --endpoint, or try again later"
            ) from exc

    def _page(self, body: Any, query: str, where: str) -> None:
        """One page of a search: shape, plausible count, consistent paging."""
        def bad(what: str) -> MliapdbError:
            return MliapdbError(f"the Materials Project API at {where} answered with a wrongly "
                                f"shaped document ({what}) - check --endpoint, or update "
                                "mp-api and mliapdb")

        if not isinstance(body, dict):
            raise bad(f"{type(body).__name__}, not an object")
        data, meta = body.get("data"), body.get("meta")
        if not isinstance(data, list):
            raise bad("no \"data\" list")
        if not isinstance(meta, dict) or type(meta.get("total_doc")) is not int \
                or meta["total_doc"] < 0:
            raise bad("no \"meta\" with an integer \"total_doc\"")
        for i, doc in enumerate(data):
            if not isinstance(doc, dict):
                raise bad(f"data[{i}] is {type(doc).__name__}, not an object")
            mid = doc.get("material_id")
            if not isinstance(mid, str) or not _MATERIAL_ID.match(mid):
                raise bad(f"data[{i}].material_id {_printable(repr(mid))[:40]} is not a "
                          "material id")
            for key, kind in (("entries", dict), ("chemsys", str)):
                if key in doc and not isinstance(doc[key], kind):
                    raise bad(f"{mid}: {key} is {type(doc[key]).__name__}, not "
                              f"{'an object' if kind is dict else 'a string'}")
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        try:
            skip = int(params.pop("_skip", 0))
            limit = int(params.pop("_limit", self.bounds.page_size))
        except ValueError:
            skip, limit = 0, self.bounds.page_size
        total, n = meta["total_doc"], len(data)
        key = (where, tuple(sorted(params.items())))
        state = self.queries.get(key)
        if state is None:
            if self.whole and total > self.bounds.max_all_docs:
                raise MliapdbError(
                    f"the Materials Project API at {where} claims {total} GGA/GGA+U documents, "
                    f"more than the {self.bounds.max_all_docs} MP could hold (it holds about "
                    "160,000 materials) - refused; check --endpoint")
            if not self.whole and total > self.bounds.max_docs:
                raise MliapdbError(
                    f"the Materials Project API at {where} claims {total} documents for one "
                    f"query, more than the {self.bounds.max_docs} any chemical system can "
                    "match (MP holds about 160,000 materials) - refused; check --endpoint")
            state = self.queries[key] = {"total": total, "limit": max(limit, 1),
                                         "requests": 0, "seen": set(self.seen)}
        state["requests"] += 1
        lie = f"the Materials Project API at {where} pages inconsistently: "
        fix = (" - refused; the pages before it are stored" if self.whole else
               " - refused, nothing written") + "; try again later, or check --endpoint"
        if total != state["total"]:
            raise MliapdbError(f"{lie}it claimed {state['total']} documents, then {total}{fix}")
        if state["requests"] > math.ceil(state["total"] / state["limit"]) + 1:
            raise MliapdbError(f"{lie}{state['requests']} requests for {state['total']} "
                               f"documents at {state['limit']} a page{fix}")
        expected = max(0, min(limit, total - skip))
        if n != expected:
            raise MliapdbError(f"{lie}it claims {total} documents but gave {n or 'none'} at "
                               f"_skip={skip} (_limit={limit}, expected {expected}){fix}")
        for doc in data:
            if doc["material_id"] in state["seen"]:
                raise MliapdbError(f"{lie}it served {doc['material_id']} twice (pages "
                                   f"repeat){fix}")
            state["seen"].add(doc["material_id"])


def _check_heartbeat(body: Any, where: str) -> None:
    """What mp-api reads of ``/heartbeat``: ``version`` (a version), ``db_version`` (a short
    printable string), ``access_controlled_batch_ids`` (a list)."""
    from packaging.version import InvalidVersion, Version

    def bad(what: str) -> MliapdbError:
        return MliapdbError(
            f"the Materials Project API at {where.removesuffix('heartbeat')} gave no valid "
            f"/heartbeat answer ({what}) - check --endpoint, or try again later")

    if not isinstance(body, dict):
        raise bad(f"{type(body).__name__}, not an object")
    for key in ("version", "db_version", "access_controlled_batch_ids"):
        if key not in body:
            raise bad(f"no {key!r} in it")
    version, db_version = body["version"], body["db_version"]
    try:
        Version(version if isinstance(version, str) else "?")
    except InvalidVersion:
        raise bad(f"'version' {_printable(repr(version))[:40]} is not a version") from None
    if not isinstance(db_version, str) or len(db_version) > 64 or _printable(db_version) \
            != db_version:
        raise bad(f"'db_version' {_printable(repr(db_version))[:40]} is not a short version "
                  "string")
    if not isinstance(body["access_controlled_batch_ids"], list):
        raise bad("'access_controlled_batch_ids' is not a list")


def _where(url: str | None) -> str:
    """A request's URL without its query (the endpoint and path), printable."""
    parts = urllib.parse.urlsplit(url or "")
    return _printable(urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))


def _printable(text: str) -> str:
    from mliapdb.errors import printable

    return printable(text)


@contextmanager
def _bounded_heartbeats(session) -> Iterator[None]:
    """mp-api 0.46 reads ``/heartbeat`` with a bare ``requests.get`` (no timeout, no size
    bound) while an ``MPRester`` is built: route those calls through the bounded session."""
    from unittest.mock import patch

    import mp_api.client.mprester as mprester
    import requests

    def get(url, params=None, **kwargs):
        return session.get(url, params=params, **kwargs)

    with patch.object(requests, "get", get), patch.object(mprester, "get", get):
        yield


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
    return MliapdbError(
        f"Materials Project API: {_printable(text.splitlines()[0][:300] if text else repr(exc))}"
    )


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


def _open(api_key: str, endpoint: str, retries: int, backoff: float, statuses: list[int],
          guard: _AnswerGuard | None = None):
    """An ``MPRester`` on ``endpoint`` (it reads the ``/heartbeat`` for the database version)."""
    import requests
    from mp_api.client import MPRester, MPRestError

    session = _session(api_key, retries, backoff, statuses, guard)
    try:
        with _bounded_heartbeats(session):
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
    run_type = params.get("run_type") if isinstance(params, dict) else None
    return _printable(run_type if isinstance(run_type, str) and run_type else str(key))


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
    for norm in wanted:
        try:
            normalize_chemsys(found[norm])
        except MliapdbError:
            raise MliapdbError(
                f"the Materials Project API gave {norm} the chemical system "
                f"{_printable(repr(found[norm]))[:60]}, not one of elements - check --endpoint"
            ) from None
    return [found[norm] for norm in wanted]


def check_key(api_key: str | None) -> None:
    """Refuse a missing or malformed API key, and a missing ``mp-api`` client, before any
    request."""
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


def fetch_entries(
    api_key: str | None,
    chemsys: Sequence[str] = (),
    material_ids: Sequence[str] = (),
    endpoint: str = MP_API_ENDPOINT,
    retries: int = 5,
    backoff: float = 0.5,
    progress: Progress = no_progress,
    bounds: ApiBounds | None = None,
) -> MpFetch:
    """GGA/GGA+U entries of each requested system (``--chemsys``) and of the systems of the
    requested materials, each with all its subsystems; one-line errors on any failure, every
    answer bounded and checked (``bounds``, default :data:`DEFAULT_BOUNDS`)."""
    if not chemsys and not material_ids:
        raise MliapdbError("nothing to fetch - pass --chemsys SYSTEM, --material-id ID or --all")
    if retries < 0 or backoff < 0:
        raise MliapdbError("--retries and --backoff must not be negative")
    systems = [normalize_chemsys(c) for c in chemsys]
    check_key(api_key)
    endpoint = endpoint if endpoint.endswith("/") else endpoint + "/"
    statuses: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mp-api's notices; failures raise
        guard = _AnswerGuard(bounds or DEFAULT_BOUNDS)
        mpr = _open(api_key, endpoint, retries, backoff, statuses, guard)
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
    """Refuse to add a fetch of another MP database version to a dataset (one snapshot each):
    the versions of its chemical-system fetches and of its ``--all`` pages."""
    stored = {
        v for (v,) in con.execute(
            "SELECT db_version FROM mp_api_fetches WHERE dataset = ? AND db_version IS NOT NULL "
            "UNION SELECT db_version FROM mp_api_pages WHERE dataset = ? "
            "AND db_version IS NOT NULL", [dataset, dataset]
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
    from mliapdb.store.database import now
    from mliapdb.store.tables import MpApiFetch

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
