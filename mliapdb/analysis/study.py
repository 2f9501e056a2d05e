"""The study on every shared MP material: the per-material energies of a study run kept as
one small predictions file, and ``docs/study.md`` rebuilt from it and the shared entries.

Two steps, both ``python -m mliapdb.analysis.study``:

- ``collect --db A.duckdb [--db B.duckdb ...] --out docs/study/predictions.csv.gz``: every
  locally computed calculation of the study databases (one row per dataset, material, model
  and kind: status, energy in eV per cell, the single point of a relaxation, steps, the
  relaxed structure in a compact pymatgen dict) plus ``settings.json`` beside it (each
  model's and kind's settings and package versions).
- ``build --data ../shared/data --predictions docs/study/predictions.csv.gz --out
  docs/study.md [--report-dir DIR]``: a fresh database of the shared entries (the datasets of
  :data:`DATASETS`), the usable rows imported with
  :func:`mliapdb.compute.predictions.import_predictions`
  (the import any group uses for its own results), the derived tables built, and the
  Markdown written from the views (``ehull_errors``) with the claims of
  :mod:`mliapdb.analysis.claims`; with ``--report-dir`` also ``mliapdb report`` for each kind.

Energies are eV per cell in the file, meV/atom in the document; errors are model - DFT.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mliapdb.analysis.claims import HIGH_DOF, KEYS, TITLES, Claim, evaluate, frac, interval, mev
from mliapdb.analysis.fair import N_MIN, compared_on
from mliapdb.compute.predictions import KINDS, import_predictions
from mliapdb.errors import MliapdbError


@dataclass(frozen=True)
class StudyDataset:
    """One MP snapshot of the shared data: its dataset name and entry files."""

    name: str
    files: tuple[str, ...]
    snapshot: str


DATASETS = (
    StudyDataset("mp-2021", ("Fe_Li_O_P_entries.json.gz", "Cl_Mn_Na_O_Y_entries.json.gz"),
                 "legacy MP ~2021 (reaction-network test files), MP2020 re-applied"),
    StudyDataset("mp-2021-emmet", ("emmet_Li-Fe-O_entries.json.gz",),
                 "legacy MP ~2021 (emmet test file, another date), MP2020 re-applied"),
    StudyDataset("mp-2025", ("Na-Fe-P-O_entries_2025.json.gz",),
                 "current MP (2024-11 .. 2025-04), MP2020 re-applied"),
)
"""The shared entry files in hull-consistent datasets: files of one snapshot share a
dataset; snapshots are never mixed in one hull."""
PREFERENCE = ("mp-2025", "mp-2021", "mp-2021-emmet")
"""A material in several datasets counts once, in the first of these it is in (the newest
snapshot; the emmet Li-Fe-O file only for the materials the others lack): every statistic is
over distinct materials, each with the Ehull of its own dataset's hull."""

KIND_ORDER = ("single-point", "relax", "relax-fixsym")
CALC_KIND = KINDS
"""``--kind`` -> stored calculation kind."""
CONVENTIONS = ("dft-hull", "model-hull", "model-hull-dft-refs")
COLUMNS = ("dataset", "material_id", "model", "kind", "status", "energy",
           "energy_single_point", "n_steps", "relaxed_structure")
"""Columns of the predictions file; ``status``: ok, not_converged or failed (only ok rows
carry ``energy``; a relaxation's ``energy_single_point`` is its start on the DFT
structure)."""
DIGITS = 8
"""Decimals of the compact relaxed structures (fractional coordinates, lattice in A)."""
REBUILD = ("make study  # = python -m mliapdb.analysis.study build --data ../shared/data "
           "--predictions docs/study/predictions.csv.gz --out docs/study.md "
           "--report-dir build/study")


# --- collect -----------------------------------------------------------------------------


def compact_structure(text: str | None) -> str:
    """A relaxed structure (pymatgen dict JSON) as the smallest dict ``Structure.from_dict``
    reads: lattice matrix and fractional coordinates rounded to :data:`DIGITS` decimals."""
    if not text:
        return ""
    d = json.loads(text)
    lattice = [[round(x, DIGITS) for x in row] for row in d["lattice"]["matrix"]]
    sites = [{"species": [{"element": s["element"], "occu": s["occu"]}
                          for s in site["species"]],
              "abc": [round(x, DIGITS) for x in site["abc"]]} for site in d["sites"]]
    return json.dumps({"@module": "pymatgen.core.structure", "@class": "Structure",
                       "lattice": {"matrix": lattice}, "sites": sites},
                      separators=(",", ":"))


def collect(db_paths: Sequence[Path], out: Path, log: Callable[[str], None] = print,
            add: bool = False) -> int:
    """Write every local calculation of ``db_paths`` to ``out`` (CSV.gz, :data:`COLUMNS`)
    and ``settings.json`` beside it; returns the rows written. A model and kind computed
    under several settings, or in two databases, is refused (one protocol per kind).

    With ``add`` the rows already in ``out`` stay (a run continued in a later session adds
    its materials): a row of the databases replaces the file's row of the same dataset,
    material, model and kind, and a model and kind in both must carry one settings hash."""
    from mliapdb.store import database as db

    rows: list[tuple] = []
    settings: dict[str, dict] = {}
    seen: dict[tuple[str, str], str] = {}
    for path in db_paths:
        con = db.connect(path, read_only=True)
        try:
            groups = con.execute(
                "SELECT c.model, c.calc_kind, c.settings_hash, any_value(c.settings), "
                "count(*), any_value(m.package_versions) FROM calculations c JOIN models m "
                "ON m.name = c.model WHERE c.settings->>'source' IS DISTINCT FROM "
                "'predictions' GROUP BY ALL ORDER BY ALL").fetchall()
            for model, ckind, shash, text, n, packages in groups:
                key = (model, ckind)
                if key in seen:
                    raise MliapdbError(f"{model} {ckind} calculations under several settings "
                                       f"({seen[key]} and {path}: {shash}) - collect one "
                                       "protocol per model and kind")
                seen[key] = f"{path}: {shash}"
                kind = next(k for k, v in CALC_KIND.items() if v == ckind)
                settings[f"{model} {kind}"] = {
                    "settings_hash": shash, "settings": json.loads(text), "rows": n,
                    "package_versions": json.loads(packages or "{}")}
            rows += con.execute(
                "SELECT dataset, material_id, model, calc_kind, status, converged, "
                "energy_single_point, energy_relaxed, n_steps, relaxed_structure "
                "FROM calculations WHERE settings->>'source' IS DISTINCT FROM 'predictions' "
                "ORDER BY dataset, material_id, model, calc_kind").fetchall()
        finally:
            con.close()
    kind_of = {v: k for k, v in CALC_KIND.items()}
    lines: dict[tuple[str, str, str, str], list] = {}
    for (dataset, mid, model, ckind, status, converged, e_sp, e_rel, steps,
         structure) in rows:
        single = ckind == "single_point"
        usable = status == "ok" and (single or bool(converged))
        state = "ok" if usable else ("failed" if status == "failed" else "not_converged")
        energy = (e_sp if single else e_rel) if usable else None
        lines[(dataset, mid, model, kind_of[ckind])] = [
            dataset, mid, model, kind_of[ckind], state,
            "" if energy is None else repr(float(energy)),
            "" if single or e_sp is None else repr(float(e_sp)),
            "" if steps is None else int(steps),
            compact_structure(structure) if usable and not single else "",
        ]
    if add and out.exists():
        lines, settings = _added(out, lines, settings)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(lines[k] for k in sorted(lines))
    rows = list(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(gzip.compress(buffer.getvalue().encode(), mtime=0))
    (out.parent / "settings.json").write_text(json.dumps(settings, indent=1, sort_keys=True)
                                              + "\n")
    log(f"wrote {len(rows)} rows to {out} ({out.stat().st_size} bytes) and "
        f"{out.parent / 'settings.json'}")
    return len(rows)


def _added(out: Path, lines: dict[tuple[str, str, str, str], list],
           settings: dict[str, dict]) -> tuple[dict, dict]:
    """``lines`` and ``settings`` over the rows and settings already in ``out`` (see
    :func:`collect` ``add``)."""
    settings_path = out.parent / "settings.json"
    old_settings = json.loads(settings_path.read_text()) if settings_path.exists() else {}
    for key, new in settings.items():
        old = old_settings.get(key)
        if old is not None and old["settings_hash"] != new["settings_hash"]:
            raise MliapdbError(f"{key}: the databases computed it under settings "
                               f"{new['settings_hash']}, {out} holds {old['settings_hash']} - "
                               "continue a run with its own settings, or collect without --add")
    merged = {**{tuple(r[c] for c in COLUMNS[:4]): [r[c] for c in COLUMNS]
                 for r in read_predictions(out)}, **lines}
    counts = Counter(f"{k[2]} {k[3]}" for k in merged)
    combined = {**old_settings, **settings}
    for key in combined:
        combined[key] = {**combined[key], "rows": counts[key]}
    return merged, combined


# --- build -------------------------------------------------------------------------------


def read_predictions(path: Path) -> list[dict[str, str]]:
    """The rows of a predictions file written by :func:`collect`."""
    try:
        text = gzip.decompress(path.read_bytes()).decode()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise MliapdbError(f"{path}: not a gzip CSV written by 'mliapdb.analysis.study collect' "
                           f"({exc})") from exc
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise MliapdbError(f"{path}: columns {reader.fieldnames}, expected {list(COLUMNS)}")
    return list(reader)


def build_database(data: Path, predictions: Path, db_path: Path,
                   log: Callable[[str], None] = print,
                   datasets: Sequence[StudyDataset] = DATASETS) -> list[dict[str, str]]:
    """Create ``db_path`` from the shared entries (``datasets``) and import the usable rows
    of ``predictions``, one import per model and kind; returns the file's rows."""
    from mliapdb.analysis.derived import refresh_derived
    from mliapdb.materials.ingest import ingest_entry_files
    from mliapdb.store import database as db

    rows = read_predictions(predictions)
    con = db.connect(db_path, create=True)
    try:
        for ds in datasets:
            paths = [data / "mp" / f for f in ds.files]
            missing = [str(p) for p in paths if not p.exists()]
            if missing:
                raise MliapdbError(f"no shared entry file {missing[0]} - pass --data, the "
                                   "folder with mp/*.json.gz")
            report = ingest_entry_files(con, paths, dataset=ds.name)
            log(f"{ds.name}: {report.n_read} entries")
        groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
        for r in rows:
            if r["status"] == "ok":
                groups[(r["model"], r["kind"])].append(r)
        with tempfile.TemporaryDirectory(prefix="mliapdb-study-") as tmp:
            for (model, kind), members in sorted(groups.items()):
                path = Path(tmp) / f"{model}.{kind}.csv"
                relax = kind != "single-point"
                with path.open("w", newline="") as fh:
                    w = csv.writer(fh, lineterminator="\n")
                    w.writerow(["dataset", "material_id", "energy"]
                               + (["energy_single_point", "relaxed_structure"] if relax else []))
                    for r in members:
                        w.writerow([r["dataset"], r["material_id"], r["energy"]]
                                   + ([r["energy_single_point"], r["relaxed_structure"]]
                                      if relax else []))
                import_predictions(con, path, model, kind)
                log(f"imported {len(members)} {kind} energies of {model}")
        refresh_derived(con, log)
    finally:
        con.close()
    return rows


# --- statistics ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorRow:
    """One counted Ehull error row (eV/atom)."""

    model: str
    kind: str
    convention: str
    material: tuple[str, str]
    dof: int
    near_hull: bool
    hubbard: str
    suspicious: bool
    error: float
    e_error: float
    e_form_error: float


def error_rows(con) -> list[ErrorRow]:
    """Counted rows of ``ehull_errors`` (``hull_counted``), ordered by dataset and material
    id as the queries' bootstrap orders them."""
    from mliapdb.analysis.fair import with_hubbard

    kind_of = {v: k for k, v in CALC_KIND.items()}
    return [ErrorRow(m, kind_of[k], c, (d, mid), int(dof), bool(near), h, bool(s), float(e),
                     float(ee), float(ef))
            for m, k, c, d, mid, dof, near, h, s, e, ee, ef in con.execute(
                "SELECT model, calc_kind, convention, dataset, material_id, dof, near_hull, "
                "hubbard, suspicious, e_above_hull_error, e_error, e_form_error FROM "
                f"{with_hubbard('ehull_errors')} WHERE hull_counted "
                "ORDER BY dataset, material_id").fetchall()]


@dataclass(frozen=True)
class Summary:
    """MAE, mean signed error and fraction underpredicted (eV/atom, fraction) with their
    95 % bootstrap intervals, as ``mliapdb query ehull-mae --ci 0.95`` computes them."""

    n: int
    mae: tuple[float, float, float]
    mean: tuple[float, float, float]
    under: tuple[float, float, float]


def summarize(errors: Sequence[float]) -> Summary:
    e = np.asarray(errors, dtype=float)
    if not len(e):
        nan = (float("nan"),) * 3
        return Summary(0, nan, nan, nan)
    (a_lo, a_hi), (m_lo, m_hi), (u_lo, u_hi) = interval(
        e, [np.abs, lambda x: x, lambda x: x < 0])
    return Summary(len(e), (float(np.abs(e).mean()), a_lo, a_hi),
                   (float(e.mean()), m_lo, m_hi), (float(np.mean(e < 0)), u_lo, u_hi))


def _mev_ci(t: tuple[float, float, float]) -> str:
    return f"{mev(t[0])} [{mev(t[1])}, {mev(t[2])}]"


def _frac_ci(t: tuple[float, float, float]) -> str:
    return f"{frac(t[0])} [{frac(t[1])}, {frac(t[2])}]"


def _short(c: Claim) -> str:
    if c.verdict == "not determined":
        return "n/a"
    return c.verdict if c.n >= N_MIN else f"inconclusive (n {c.n})"


def _table(head: Sequence[str], rows: Iterable[Sequence], numeric: Sequence[bool]) -> list[str]:
    align = ["---:" if n else "---" for n in numeric]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out + [""]


def _claims(rows: Sequence[ErrorRow]) -> list[Claim]:
    return evaluate([r.error for r in rows], [r.dof for r in rows],
                    [r.near_hull for r in rows])


# --- document ------------------------------------------------------------------------------


@dataclass
class StudyData:
    """What the document shows, read from the rebuilt database."""

    rows: list[ErrorRow]
    models: list[dict]
    datasets: list[dict]
    file_rows: list[dict[str, str]]
    settings: dict[str, dict]
    n_distinct: int = 0
    """Distinct material ids of the datasets."""

    def select(self, kind: str, convention: str, model: str | None = None,
               hubbard: str | None = None) -> list[ErrorRow]:
        return [r for r in self.rows if r.kind == kind and r.convention == convention
                and (model is None or r.model == model)
                and (hubbard is None or r.hubbard == hubbard)]

    def models_of(self, kind: str) -> list[str]:
        return sorted({r.model for r in self.rows if r.kind == kind})


def load(con, file_rows: list[dict[str, str]], settings: dict[str, dict]) -> StudyData:
    from mliapdb.analysis.fair import HUBBARD_SQL

    models = [dict(zip(("name", "family", "training_set", "energy_convention",
                        "trained_with_u"), r, strict=True)) for r in con.execute(
        "SELECT name, family, training_set, energy_convention, trained_with_u FROM models "
        "ORDER BY name").fetchall()]
    datasets = [dict(zip(("dataset", "materials", "gga", "ggau", "dof_min", "dof_max",
                          "high_dof", "near_hull"), r, strict=True)) for r in con.execute(
        f"SELECT m.dataset, count(*), count(*) FILTER ({HUBBARD_SQL} = 'GGA'), "
        f"count(*) FILTER ({HUBBARD_SQL} = 'GGA+U'), min(s.dof), max(s.dof), "
        f"count(*) FILTER (s.dof > {HIGH_DOF}), count(*) FILTER (ds.e_above_hull < "
        "(SELECT near_hull_threshold FROM stg_stats_settings)) "
        "FROM mp_materials m JOIN dft_entries dh USING (dataset, material_id) "
        "JOIN stg_symmetry s USING (dataset, material_id) "
        "JOIN dft_stability ds USING (dataset, material_id) "
        "WHERE dh.compat_status = 'ok' GROUP BY m.dataset ORDER BY m.dataset").fetchall()]
    held: dict[str, set[str]] = defaultdict(set)
    for dataset, mid in con.execute("SELECT dataset, material_id FROM mp_materials").fetchall():
        held[mid].add(dataset)
    counted = Counter(chosen_datasets(held).values())
    for d in datasets:
        d["counted"] = counted.get(d["dataset"], 0)
    return StudyData(primary_rows(error_rows(con), held), models, datasets, file_rows,
                     settings, len(held))


def primary_rows(rows: Sequence[ErrorRow], held: dict[str, set[str]],
                 preference: Sequence[str] = PREFERENCE) -> list[ErrorRow]:
    """``rows`` of each material id in its preferred dataset only (:data:`PREFERENCE`, then
    the others by name) of those holding it (``held``: material id -> datasets), for every
    model, kind and convention alike, so that all are compared on the same rows."""
    chosen = chosen_datasets(held, preference)
    return [r for r in rows if chosen[r.material[1]] == r.material[0]]


def chosen_datasets(held: dict[str, set[str]], preference: Sequence[str] = PREFERENCE
                    ) -> dict[str, str]:
    """Material id -> the dataset it counts in (see :data:`PREFERENCE`)."""
    rank = {d: i for i, d in enumerate(preference)}
    return {mid: min(ds, key=lambda d: (rank.get(d, len(rank)), d)) for mid, ds in held.items()}


def _status_counts(data: StudyData) -> dict[tuple[str, str], Counter]:
    out: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for r in data.file_rows:
        out[(r["model"], r["kind"])][r["status"]] += 1
    return out


def _protocol(data: StudyData) -> list[str]:
    out = []
    for key in sorted(data.settings):
        s = data.settings[key]["settings"]
        if key.endswith(" single-point"):
            continue
        parts = [f"{k} {s[k]}" for k in ("optimizer", "cell_filter", "fmax", "max_steps")
                 if k in s]
        out.append(f"`{key}`: " + ", ".join(parts))
    return out


def _models_section(data: StudyData) -> list[str]:
    counts = _status_counts(data)
    kinds = [k for k in KIND_ORDER if any(key[1] == k for key in counts)]
    head = ["model", "training set", "energy convention", "compared on"]
    head += [f"{k} ok / failed" + (" / not converged" if k != "single-point" else "")
             for k in kinds]
    body = []
    for m in data.models:
        cells = [m["name"], m["training_set"] or "", m["energy_convention"],
                 compared_on(m["trained_with_u"])]
        for k in kinds:
            c = counts.get((m["name"], k))
            if not c:
                cells.append("")
                continue
            cells.append(f"{c['ok']} / {c['failed']}"
                         + (f" / {c['not_converged']}" if k != "single-point" else ""))
        body.append(cells)
    return _table(head, body, [False] * 4 + [True] * len(kinds))


def _datasets_section(data: StudyData, datasets: Sequence[StudyDataset]) -> list[str]:
    files = {d.name: d for d in datasets}
    body = [[d["dataset"], ", ".join(f"`{f}`" for f in files[d["dataset"]].files),
             files[d["dataset"]].snapshot, d["materials"], d["counted"], d["gga"], d["ggau"],
             f"{d['dof_min']}-{d['dof_max']}", d["high_dof"], d["near_hull"]]
            for d in data.datasets if d["dataset"] in files]
    return _table(["dataset", "files", "snapshot", "materials", "counted here", "GGA", "GGA+U",
                   "DOF", f"DOF > {HIGH_DOF}", "near hull"], body,
                  [False, False, False, True, True, True, True, True, True, True])


def _per_model_table(data: StudyData, kind: str, conventions: Sequence[str]) -> list[str]:
    head = ["model", "convention", "n", "MAE [95 % CI]", "mean signed [95 % CI]",
            "fraction under [95 % CI]", *[f"({k})" for k in KEYS]]
    body = []
    for model in data.models_of(kind):
        for conv in conventions:
            rows = data.select(kind, conv, model)
            if not rows:
                continue
            s = summarize([r.error for r in rows])
            body.append([model, conv, s.n, _mev_ci(s.mae), _mev_ci(s.mean), _frac_ci(s.under),
                         *[_short(c) for c in _claims(rows)]])
    return _table(head, body, [False, False, True, True, True, True, *[False] * 4])


def _common(data: StudyData, kind: str, conv: str, models: Sequence[str],
            hubbard: str | None = None) -> tuple[set, int]:
    """Materials every model counts (and how many any model counts)."""
    sets = [{r.material for r in data.select(kind, conv, m, hubbard)} for m in models]
    if not sets:
        return set(), 0
    return set.intersection(*sets), len(set.union(*sets))


def _common_table(data: StudyData, kind: str, conventions: Sequence[str]) -> list[str]:
    head = ["convention", "model", "n", "common / any", "MAE [95 % CI]",
            "mean signed [95 % CI]", "fraction under [95 % CI]"]
    body = []
    models = data.models_of(kind)
    for conv in conventions:
        shared, n_any = _common(data, kind, conv, models)
        for model in models:
            rows = [r for r in data.select(kind, conv, model) if r.material in shared]
            s = summarize([r.error for r in rows])
            body.append([conv, model, s.n, f"{len(shared)}/{n_any}", _mev_ci(s.mae),
                         _mev_ci(s.mean), _frac_ci(s.under)])
    return _table(head, body, [False, False, True, False, True, True, True])


def _hubbard_table(data: StudyData, kind: str, conventions: Sequence[str]) -> list[str]:
    head = ["model", "convention", "DFT entries", "n", "MAE [95 % CI]",
            "mean signed [95 % CI]", "fraction under", "(a)", "(c)"]
    body = []
    for model in data.models_of(kind):
        for conv in conventions:
            for hub in ("GGA", "GGA+U"):
                rows = data.select(kind, conv, model, hub)
                if not rows:
                    continue
                s = summarize([r.error for r in rows])
                found = {c.key: c for c in _claims(rows)}
                body.append([model, conv, hub, s.n, _mev_ci(s.mae), _mev_ci(s.mean),
                             frac(s.under[0]), _short(found["a"]), _short(found["c"])])
    return _table(head, body, [False, False, False, True, True, True, True, False, False])


def _dof_table(data: StudyData, kind: str, conv: str) -> list[str]:
    head = ["model", f"n DOF <= {HIGH_DOF}", "MAE", "mean signed", f"n DOF > {HIGH_DOF}",
            "MAE [95 % CI]", "mean signed [95 % CI]", "fraction under", "(c)"]
    body = []
    for model in data.models_of(kind):
        rows = data.select(kind, conv, model)
        low = summarize([r.error for r in rows if r.dof <= HIGH_DOF])
        high = summarize([r.error for r in rows if r.dof > HIGH_DOF])
        c = {x.key: x for x in _claims(rows)}["c"]
        body.append([model, low.n, mev(low.mae[0]), mev(low.mean[0]), high.n,
                     _mev_ci(high.mae), _mev_ci(high.mean), frac(high.under[0]), _short(c)])
    return _table(head, body, [False, True, True, True, True, True, True, True, False])


def _energy_table(data: StudyData, kind: str) -> list[str]:
    head = ["model", "n", "total energy: mean signed [95 % CI]", "fraction under",
            "formation energy (DFT refs): mean signed [95 % CI]", "fraction under",
            "formation energy (model refs): mean signed", "n (model refs)"]
    body = []
    for model in data.models_of(kind):
        rows = data.select(kind, "dft-hull", model)
        total = summarize([r.e_error for r in rows])
        form = summarize([r.e_form_error for r in rows])
        own = summarize([r.e_form_error for r in data.select(kind, "model-hull", model)])
        body.append([model, total.n, _mev_ci(total.mean), frac(total.under[0]),
                     _mev_ci(form.mean), frac(form.under[0]), mev(own.mean[0]), own.n])
    return _table(head, body, [False, True, True, True, True, True, True, True])


def _verdict_counts(data: StudyData, kind: str, conventions: Sequence[str]) -> list[str]:
    head = ["convention", "claim", "yes", "no", "inconclusive"]
    body = []
    for conv in conventions:
        found: dict[str, dict[str, list[str]]] = {k: defaultdict(list) for k in KEYS}
        for model in data.models_of(kind):
            rows = data.select(kind, conv, model)
            if not rows:
                continue
            for c in _claims(rows):
                v = c.verdict if c.verdict in ("yes", "no") else "inconclusive"
                found[c.key][v].append(model)
        for k in KEYS:
            body.append([conv, f"({k}) {TITLES[k]}",
                         *[", ".join(found[k][v]) or "-" for v in ("yes", "no", "inconclusive")]])
    return _table(head, body, [False] * 5)


def _relax_section(data: StudyData, conventions: Sequence[str]) -> list[str]:
    relaxed = sorted(set(data.models_of("relax")) | set(data.models_of("relax-fixsym")))
    out: list[str] = []
    for model in relaxed:
        kinds = [k for k in KIND_ORDER if model in data.models_of(k)]
        out += [f"### {model}: {' vs '.join(kinds)} on the same materials", ""]
        head = ["convention", "kind", "n", "MAE [95 % CI]", "mean signed [95 % CI]",
                "fraction under [95 % CI]", *[f"({k})" for k in KEYS], "suspicious"]
        body = []
        for conv in conventions:
            sets = [{r.material for r in data.select(k, conv, model)} for k in kinds]
            shared = set.intersection(*sets) if sets else set()
            for k in kinds:
                rows = [r for r in data.select(k, conv, model) if r.material in shared]
                if not rows:
                    continue
                s = summarize([r.error for r in rows])
                body.append([conv, k, s.n, _mev_ci(s.mae), _mev_ci(s.mean), _frac_ci(s.under),
                             *[_short(c) for c in _claims(rows)],
                             "" if k == "single-point" else sum(r.suspicious for r in rows)])
        out += _table(head, body, [False, False, True, True, True, True, *[False] * 4, True])
        out += ["Within GGA and GGA+U entries (same materials, fixed DFT hull and model hull):",
                ""]
        head = ["convention", "DFT entries", "kind", "n", "MAE [95 % CI]",
                "mean signed [95 % CI]", "(a)", "(c)"]
        body = []
        for conv in ("dft-hull", "model-hull"):
            if conv not in conventions:
                continue
            for hub in ("GGA", "GGA+U"):
                sets = [{r.material for r in data.select(k, conv, model, hub)} for k in kinds]
                shared = set.intersection(*sets) if sets else set()
                for k in kinds:
                    rows = [r for r in data.select(k, conv, model, hub) if r.material in shared]
                    if not rows:
                        continue
                    s = summarize([r.error for r in rows])
                    found = {c.key: c for c in _claims(rows)}
                    body.append([conv, hub, k, s.n, _mev_ci(s.mae), _mev_ci(s.mean),
                                 _short(found["a"]), _short(found["c"])])
        out += _table(head, body, [False, False, False, True, True, True, False, False])
        clean_rows = []
        for conv in conventions:
            for k in kinds[1:]:
                rows = [r for r in data.select(k, conv, model) if not r.suspicious]
                s = summarize([r.error for r in rows])
                if s.n:
                    clean_rows.append([conv, k, s.n, _mev_ci(s.mae), _mev_ci(s.mean)])
        if clean_rows:
            out += ["Suspicious relaxations left out (`--exclude-suspicious`; every material "
                    "the model counts):", ""]
            out += _table(["convention", "kind", "n", "MAE [95 % CI]", "mean signed [95 % CI]"],
                          clean_rows, [False, False, True, True, True])
    return out


INTRO = """\
The withdrawn 2025 study claimed that MLIAPs systematically *underpredict* Ehull (MAE > 30
meV/atom for the best model), worst for structures with many symmetry degrees of freedom
(> 40 meV/atom at DOF > 40) and for near-hull materials. This page tests each claim on every
material of the shared Materials Project data, per model and Ehull convention
(`docs/conventions.md`), with 95 % bootstrap intervals, within GGA and GGA+U entries, and
for free against symmetry-constrained relaxations.

This file is generated: every number below comes from `docs/study/predictions.csv.gz`
(the per-material energies) and the shared entries, rebuilt by one command:

```bash
{rebuild}
```

To add results (another model, more relaxations): run `mliapdb ingest relax` in a database
of the shared entries (datasets as in the table below), then `python -m mliapdb.analysis.study
collect --db THAT.duckdb --add` keeps the file's rows and adds or replaces that database's
(a model and kind already in the file must carry the same settings hash), and `make study`.
"""

READING = f"""\
How to read the tables: errors are model - DFT in meV/atom; "under" is the fraction of
materials whose model Ehull lies below the DFT Ehull. Intervals are 95 % percentile
bootstrap intervals over materials (1000 resamples, seed 20260101; `docs/conventions.md`),
the same as `mliapdb query ehull-mae --ci 0.95`. Claims: (a) {TITLES['a']} (mean signed
error < 0 and fraction under > 0.5); (b) {TITLES['b']}; (c) {TITLES['c']}; (d) {TITLES['d']}
(DFT Ehull < 50 meV/atom). A claim reads yes or no only where its interval lies on one side
and at least 30 materials count, else inconclusive (n/a: no materials). Model-hull
conventions count only materials whose whole chemical system the model computed (a
failed structure leaves its systems out, so models differ in n: see the common-materials
tables).
"""


def render(data: StudyData, datasets: Sequence[StudyDataset] = DATASETS) -> str:
    n_pairs = sum(d["materials"] for d in data.datasets)
    distinct = data.n_distinct
    sp_models = data.models_of("single-point")
    title = (f"# The study's claims on every shared MP material: {len(sp_models)} models, "
             f"{distinct} materials")
    conventions = [c for c in CONVENTIONS if any(r.convention == c for r in data.rows)]
    out = [title, "", INTRO.format(rebuild=REBUILD), "## Data and protocol", "",
           f"{distinct} distinct MP materials ({n_pairs} dataset x material pairs), in "
           f"{len(datasets)} dataset(s) so that no hull mixes snapshots; a material in several "
           "counts once, in the newest snapshot holding it (the emmet Li-Fe-O file only for "
           "the materials the others lack), with the Ehull of that dataset's hull "
           "(snapshots: `../shared/data/README.md`; MP data CC BY 4.0, Jain et al., APL "
           "Materials 1, 011002 (2013)):", ""]
    out += _datasets_section(data, datasets)
    out += ["Models (`mliapdb models`; checkpoints checked by sha256; results per kind: ok / "
            "failed / not converged):", ""]
    out += _models_section(data)
    counts = _status_counts(data)
    short = [f"{m} ({sum(counts[(m, 'single-point')].values())} of {n_pairs})"
             for m in sp_models if sum(counts[(m, "single-point")].values()) < n_pairs]
    if short:
        out += ["Single points not yet run on every dataset x material pair (the CPU time of "
                "this study ran out; `mliapdb ingest relax --kind single-point` resumes "
                "where it stopped): " + ", ".join(short) + ". Their statistics cover the "
                "materials they have; model-hull rows only complete chemical systems.", ""]
    protocol = _protocol(data)
    out += ["Single points on the DFT structures; relaxations with ASE FIRE + "
            "FrechetCellFilter, relax-fixsym adding ASE FixSymmetry (the DFT space group), "
            "whole chemical systems, smallest first, on CPU (settings in "
            "`docs/study/settings.json`)" + (":" if protocol else
                                             "; no relaxations are in this file yet."), ""]
    out += [f"- {p}" for p in protocol] + ([""] if protocol else [])
    out += [READING]
    if sp_models:
        out += ["## Single points on the DFT structures", "",
                "### Per model and convention (every material the model counts)", ""]
        out += _per_model_table(data, "single-point", conventions)
        out += ["### Claims: which models support each", ""]
        out += _verdict_counts(data, "single-point", conventions)
        out += ["### Models on common materials (every model counts each)", ""]
        out += _common_table(data, "single-point", conventions)
        out += [f"### DOF > {HIGH_DOF} against DOF <= {HIGH_DOF}", ""]
        for conv in conventions:
            out += [f"{conv}:", ""] + _dof_table(data, "single-point", conv)
        out += ["### Within GGA and within GGA+U entries", "",
                "MPtrj mixes GGA and GGA+U; a DOF effect that exists only in one of them is a "
                "Hubbard-U effect, not a symmetry one.", ""]
        out += _hubbard_table(data, "single-point", conventions)
        out += ["### Total and formation energies", "",
                "Total energy: model energy on MP2020's footing - corrected DFT energy; "
                "formation energy against DFT elemental references (fixed DFT hull) and "
                "against the model's own (model hull).", ""]
        out += _energy_table(data, "single-point")
    if data.models_of("relax") or data.models_of("relax-fixsym"):
        out += ["## Relaxations: free against symmetry-constrained", "",
                "The study's causal claim: relaxing lowers the symmetry of high-DOF "
                "structures and so lowers their energy. Comparing free relaxation (relax) "
                "with relaxation that keeps the DFT space group (relax-fixsym) on the same "
                "materials tests it: if the underprediction came from symmetry breaking, "
                "relax-fixsym would remove it.", ""]
        out += _relax_section(data, conventions)
        for kind in ("relax", "relax-fixsym"):
            if data.models_of(kind):
                out += [f"### {kind}: per model and convention (every material counted)", ""]
                out += _per_model_table(data, kind, conventions)
    return "\n".join(out).rstrip() + "\n"


def build(data: Path, predictions: Path, out: Path, db_path: Path | None = None,
          report_dir: Path | None = None, log: Callable[[str], None] = print,
          datasets: Sequence[StudyDataset] = DATASETS) -> str:
    """Rebuild the study database and write the document to ``out``; returns its text."""
    from mliapdb.store import database as db

    settings_path = predictions.parent / "settings.json"
    settings = json.loads(settings_path.read_text()) if settings_path.exists() else {}
    with tempfile.TemporaryDirectory(prefix="mliapdb-study-db-") as tmp:
        path = db_path or Path(tmp) / "study.duckdb"
        if path.exists():
            raise MliapdbError(f"{path} exists - give a new path (the study builds a fresh "
                               "database)")
        rows = build_database(data, predictions, path, log, datasets)
        con = db.connect(path, read_only=True)
        try:
            text = render(load(con, rows, settings), datasets)
        finally:
            con.close()
        if report_dir is not None:
            from mliapdb.analysis.report import build_report

            for kind in KIND_ORDER:
                if any(r["kind"] == kind and r["status"] == "ok" for r in rows):
                    build_report(path, report_dir / kind, kind=kind, log=log)
    out.write_text(text)
    log(f"wrote {out}")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mliapdb.analysis.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="study databases -> predictions file")
    c.add_argument("--db", type=Path, action="append", required=True)
    c.add_argument("--out", type=Path, default=Path("docs/study/predictions.csv.gz"))
    c.add_argument("--add", action="store_true",
                   help="keep the rows already in --out (a run continued later)")
    b = sub.add_parser("build", help="predictions file + shared entries -> docs/study.md")
    b.add_argument("--data", type=Path, default=Path("../shared/data"))
    b.add_argument("--predictions", type=Path, default=Path("docs/study/predictions.csv.gz"))
    b.add_argument("--out", type=Path, default=Path("docs/study.md"))
    b.add_argument("--db", type=Path, default=None, help="keep the rebuilt database here")
    b.add_argument("--report-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    try:
        if args.command == "collect":
            collect(args.db, args.out, log, args.add)
        else:
            build(args.data, args.predictions, args.out, args.db, args.report_dir, log)
    except MliapdbError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
