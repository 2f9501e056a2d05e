"""``mliapdb query ...``: the study's statistics, computed by SQL over the views."""

from __future__ import annotations

import click

from mliapdb.cli.common import db_option, resolve_db
from mliapdb.cli.output import emit, format_option, status
from mliapdb.queries import GROUPINGS


def _run_query(ctx: click.Context, db_path: str | None, fmt: str, func, **kwargs):
    """Run ``func(con, **kwargs)`` on a read-only connection, print its description on stderr
    and its rows in ``fmt`` on stdout; return the result."""
    from mliapdb import db

    con = db.connect(resolve_db(ctx, db_path), read_only=True)
    try:
        result = func(con, **kwargs)
    finally:
        con.close()
    status(result.description)
    emit(result.columns, result.rows, fmt)
    return result


@click.group()
def query() -> None:
    """Statistics of model vs DFT stability, computed by SQL."""


@query.command("ehull-mae")
@click.option(
    "--by",
    type=click.Choice(list(GROUPINGS)),
    default="dof",
    show_default=True,
    help="Group materials by this property (always also by model).",
)
@click.option("--model", default=None, help="Only this model.")
@click.option(
    "--kind",
    type=click.Choice(["relax", "relax-fixsym", "single-point"]),
    default="relax",
    show_default=True,
    help="Calculation kind: relaxed, symmetry-constrained relaxed, or single-point energies.",
)
@click.option("--dataset", default=None, help="Only this dataset.")
@click.option("--settings", "settings_hash", default=None, help="Only this settings hash.")
@click.option(
    "--symprec", type=float, default=None, help="Symmetry tolerance (default: the database's)."
)
@click.option(
    "--symmetry-method", type=click.Choice(["moyopy", "spglib"]), default=None,
    help="Symmetry library (default: the database's).",
)
@format_option
@db_option
@click.pass_context
def ehull_mae(
    ctx, by, model, kind, dataset, settings_hash, symprec, symmetry_method, fmt, db_path
):
    """Count, MAE, mean signed error (meV/atom) and fraction underpredicted of Ehull."""
    from mliapdb.queries import ehull_mae as run

    result = _run_query(
        ctx, db_path, fmt, run, by=by, model=model, dataset=dataset,
        settings_hash=settings_hash, symprec=symprec, symmetry_method=symmetry_method,
        kind=kind.replace("-", "_"),
    )
    if not result.rows:
        status("no converged relaxations match - run 'mliapdb ingest relax --model MODEL' first")


@query.command("calculations")
@click.option("--model", default=None, help="Only this model.")
@click.option("--dataset", default=None, help="Only this dataset.")
@format_option
@db_option
@click.pass_context
def calculations(ctx, model, dataset, fmt, db_path):
    """How many calculations per model ended ok, not converged or failed."""
    from mliapdb.queries import calculation_summary

    _run_query(ctx, db_path, fmt, calculation_summary, model=model, dataset=dataset)
