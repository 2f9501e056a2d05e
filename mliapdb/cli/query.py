"""``mliapdb query ...``: the study's statistics, computed by SQL over the views."""

from __future__ import annotations

import click

from mliapdb.analysis.queries import CONVENTIONS, GROUPINGS, HULL_COVERAGES
from mliapdb.cli.common import db_option, resolve_db
from mliapdb.cli.output import emit, format_option, status


def _run_query(ctx: click.Context, db_path: str | None, fmt: str, func, **kwargs):
    """Run ``func(con, **kwargs)`` on a read-only connection, print its description on stderr
    and its rows in ``fmt`` on stdout (an empty result: its hint on stderr too); return the
    result."""
    from mliapdb.store import database as db

    con = db.connect(resolve_db(ctx, db_path), read_only=True)
    try:
        result = func(con, **kwargs)
    finally:
        con.close()
    status(result.description)
    emit(result.columns, result.rows, fmt)
    if not result.rows and result.hint:
        status(result.hint)
    return result


@click.group()
def query() -> None:
    """Statistics of model vs DFT stability, computed by SQL."""


KIND = click.option(
    "--kind",
    type=click.Choice(["relax", "relax-fixsym", "single-point"]),
    default="relax",
    show_default=True,
    help="Calculation kind: relaxed, symmetry-constrained relaxed, or single-point energies.",
)
CONVENTION = click.option(
    "--convention",
    type=click.Choice(list(CONVENTIONS)),
    default="dft-hull",
    show_default=True,
    help="dft-hull: fixed DFT hull; model-hull: hull of the model's own energies; "
    "model-hull-dft-refs: that hull with DFT elemental references.",
)
MODEL = click.option("--model", default=None, help="Only this model.")
HULL_COVERAGE = click.option(
    "--hull-coverage",
    type=click.Choice(list(HULL_COVERAGES)),
    default=None,
    help="Model-hull conventions: count materials whose chemical system is complete "
    "(complete), or complete once failed/unconverged relaxations enter the hull with their "
    "lowest energy (filled). Default: the database's, complete.",
)


def by_option(default: str, choices=None):
    """The shared ``--by`` grouping option (names from :data:`mliapdb.analysis.queries.GROUPINGS`),
    repeatable: several combine."""
    return click.option(
        "--by",
        type=click.Choice(list(choices or GROUPINGS)),
        multiple=True,
        default=(default,),
        show_default=True,
        help="Group materials by this property (always also by model); repeat to combine, "
        "e.g. --by dof-bin --by hubbard (hubbard: GGA vs GGA+U DFT entry).",
    )


def _by_arg(by: tuple[str, ...]):
    """One ``--by``: the name (the query's own path); several: the tuple."""
    return by[0] if len(by) == 1 else by


def fair_options(ci: bool = True):
    """``--common``, ``--exclude-suspicious`` and, for statistics of errors, ``--ci`` and
    ``--seed``."""
    from mliapdb.analysis.fair import DEFAULT_SEED, N_BOOT

    def decorate(f):
        if ci:
            f = click.option(
                "--seed", type=int, default=DEFAULT_SEED, show_default=True,
                help="Seed of the bootstrap (--ci).")(f)
            f = click.option(
                "--ci", "ci", type=float, default=None,
                help=f"Add percentile-bootstrap confidence intervals at this level (e.g. "
                f"0.95) for MAE, mean signed error and fraction underpredicted: {N_BOOT} "
                "resamples of the materials of each row.")(f)
        f = click.option(
            "--exclude-suspicious", "exclude_suspicious", is_flag=True, default=False,
            help="Leave out suspicious relaxations (volume change, RMSD or energy drop below "
            "the single point beyond the db_settings suspicious_* thresholds); stderr says "
            "how many.")(f)
        return click.option(
            "--common", is_flag=True, default=False,
            help="Only materials that every compared model counts (under this convention "
            "and kind); a coverage column says how many of all.")(f)

    return decorate


@query.command("ehull-mae")
@by_option("dof")
@MODEL
@KIND
@CONVENTION
@click.option(
    "--near-hull",
    "near_hull",
    type=float,
    default=None,
    help="Only materials with DFT Ehull below this (eV/atom, above 0), e.g. 0.05.",
)
@click.option(
    "--bins",
    default=None,
    help="Lower edges of the DOF bins for --by dof-bin only, strictly increasing integers "
    ">= 0, e.g. 1,2,4,8,16 (default: the database's, 1,2,4,8,16,32).",
)
@click.option("--dataset", default=None, help="Only this dataset.")
@click.option("--settings", "settings_hash", default=None, help="Only this settings hash.")
@click.option(
    "--symprec", type=float, default=None,
    help="Symmetry tolerance in Angstrom, 1e-5 to 1, of stored analyses (default: the "
    "database's).",
)
@click.option(
    "--symmetry-method", type=click.Choice(["moyopy", "spglib"]), default=None,
    help="Symmetry library (default: the database's).",
)
@HULL_COVERAGE
@fair_options()
@format_option
@db_option
@click.pass_context
def ehull_mae(
    ctx, by, model, kind, convention, near_hull, bins, dataset, settings_hash, symprec,
    symmetry_method, hull_coverage, common, ci, seed, fmt, db_path, exclude_suspicious=False,
):
    """Count, MAE, RMSE, mean and median signed error (meV/atom) and fraction underpredicted
    of Ehull, per model and group."""
    from mliapdb.analysis.fair import check_level
    from mliapdb.analysis.queries import check_query_inputs, parse_bins
    from mliapdb.analysis.queries import ehull_mae as run

    edges = parse_bins(bins) if bins is not None else None
    check_query_inputs(by, edges, near_hull, symprec)  # before the database is opened
    check_level(ci)
    _run_query(
        ctx, db_path, fmt, run, by=_by_arg(by), model=model, dataset=dataset,
        settings_hash=settings_hash, symprec=symprec, symmetry_method=symmetry_method,
        kind=kind.replace("-", "_"), convention=convention, near_hull=near_hull,
        bins=edges, hull_coverage=hull_coverage, common=common, ci=ci, seed=seed,
        exclude_suspicious=exclude_suspicious,
    )


@query.command("near-hull")
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="DFT Ehull below which a material is near the hull, eV/atom, above 0 (default: the "
    "database's, 0.05).",
)
@by_option("model")
@MODEL
@KIND
@CONVENTION
@HULL_COVERAGE
@fair_options()
@format_option
@db_option
@click.pass_context
def near_hull(ctx, threshold, by, model, kind, convention, hull_coverage, common, ci, seed,
              fmt, db_path, exclude_suspicious=False):
    """Ehull errors of the near-hull materials: are they underpredicted?"""
    from mliapdb.analysis.fair import check_level
    from mliapdb.analysis.queries import check_threshold
    from mliapdb.analysis.queries import near_hull as run

    check_threshold(threshold, "--threshold")  # before the database is opened
    check_level(ci)
    _run_query(ctx, db_path, fmt, run, threshold=threshold, by=_by_arg(by), model=model,
               kind=kind.replace("-", "_"), convention=convention,
               hull_coverage=hull_coverage, common=common, ci=ci, seed=seed,
               exclude_suspicious=exclude_suspicious)


def _per_model_query(name: str, function: str, help_text: str, ci: bool = True) -> None:
    """Register ``mliapdb query NAME``: ``mliapdb.analysis.queries.FUNCTION`` per model, with
    --model,
    --kind, --convention, --by, --common and (``ci``) --ci / --seed."""

    @query.command(name, help=help_text)
    @by_option("model")
    @MODEL
    @KIND
    @CONVENTION
    @fair_options(ci)
    @format_option
    @db_option
    @click.pass_context
    def command(ctx, by, model, kind, convention, common, fmt, db_path, ci=None, seed=None,
                exclude_suspicious=False):
        from mliapdb.analysis import queries
        from mliapdb.analysis.fair import check_level

        check_level(ci)
        extra = {"ci": ci, "seed": seed} if ci is not None else {}
        _run_query(ctx, db_path, fmt, getattr(queries, function), model=model,
                   kind=kind.replace("-", "_"), convention=convention, by=_by_arg(by),
                   common=common, exclude_suspicious=exclude_suspicious, **extra)


_per_model_query("energy-error", "energy_error",
                 "Total and formation energy errors (meV/atom) per model.")
_per_model_query("stability", "stability",
                 "Stability classification per model: TP/FP/TN/FN, precision, recall, F1, DAF.",
                 ci=False)


@query.command("relax-effect")
@by_option("model", ["model", "dof-bin", "hubbard"])
@MODEL
@click.option("--kind", type=click.Choice(["relax", "relax-fixsym"]), default="relax",
              show_default=True, help="The relaxation compared with the single points.")
@CONVENTION
@fair_options()
@format_option
@db_option
@click.pass_context
def relax_effect(ctx, by, model, kind, convention, common, ci, seed, fmt, db_path,
                 exclude_suspicious=False):
    """What relaxing does: Ehull errors of the same materials after a single point on the DFT
    structure and after a relaxation, and the relaxation energy."""
    from mliapdb.analysis.fair import check_level
    from mliapdb.analysis.queries import relaxation_effect as run

    check_level(ci)
    _run_query(ctx, db_path, fmt, run, by=_by_arg(by), model=model,
               kind=kind.replace("-", "_"), convention=convention, common=common, ci=ci,
               seed=seed, exclude_suspicious=exclude_suspicious)


@query.command("symmetry")
@by_option("model")
@MODEL
@fair_options(ci=False)
@format_option
@db_option
@click.pass_context
def symmetry(ctx, by, model, common, fmt, db_path, exclude_suspicious=False):
    """Space group kept / lowered / raised after relaxation, and RMSD, per model."""
    from mliapdb.analysis.queries import symmetry as run

    _run_query(ctx, db_path, fmt, run, model=model, by=_by_arg(by), common=common,
               exclude_suspicious=exclude_suspicious)


@query.command("calculations")
@click.option("--model", default=None, help="Only this model.")
@click.option("--dataset", default=None, help="Only this dataset.")
@format_option
@db_option
@click.pass_context
def calculations(ctx, model, dataset, fmt, db_path):
    """How many calculations per model ended ok, not converged or failed."""
    from mliapdb.analysis.queries import calculation_summary

    _run_query(ctx, db_path, fmt, calculation_summary, model=model, dataset=dataset)
