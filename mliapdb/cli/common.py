"""Options shared by the commands."""

from __future__ import annotations

import click

from mliapdb.config import DEFAULT_DB, DEFAULT_SYMPREC, SYMPREC_RANGE


def db_option(func):
    """``--db PATH`` on a command (overrides the group's ``--db``)."""
    return click.option(
        "--db",
        "db_path",
        default=None,
        metavar="PATH",
        help="Database file (overrides the global --db).",
    )(func)


def resolve_db(ctx: click.Context, db_path: str | None) -> str:
    """The command's ``--db``, else the group's ``--db`` (default ``mliapdb.duckdb``)."""
    return db_path or ctx.find_root().params.get("db") or DEFAULT_DB


def dataset_option(func):
    """``--dataset NAME`` of the ingest commands (default ``mp``)."""
    return click.option(
        "--dataset",
        default="mp",
        show_default=True,
        help="Dataset (one MP snapshot) the entries belong to; hulls are built per dataset.",
    )(func)


def _check_symprecs(ctx, param, values: tuple[float, ...]) -> tuple[float, ...]:
    """Refuse (usage error, exit 2) a tolerance outside SYMPREC_RANGE or NaN."""
    lo, hi = SYMPREC_RANGE
    for value in values:
        if not lo <= value <= hi:
            raise click.BadParameter(
                f"{value:g} is not in the range {lo:g} to {hi:g} (Angstrom)", ctx, param
            )
    return values


def symmetry_options(func):
    """``--symprec`` (repeatable) and ``--symmetry-method`` of the ingest commands."""
    func = click.option(
        "--symmetry-method",
        type=click.Choice(["moyopy", "spglib"]),
        default="moyopy",
        show_default=True,
        help="Library used for the symmetry analysis.",
    )(func)
    return click.option(
        "--symprec",
        "symprecs",
        multiple=True,
        type=float,
        default=(DEFAULT_SYMPREC,),
        show_default=True,
        callback=_check_symprecs,
        help=f"Symmetry tolerance(s) in Angstrom, {SYMPREC_RANGE[0]:g} to {SYMPREC_RANGE[1]:g}; "
        "repeat to store analyses at several.",
    )(func)
