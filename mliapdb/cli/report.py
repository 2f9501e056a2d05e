"""``mliapdb report``: the study report (Markdown, HTML, PNG figures) from the views."""

from __future__ import annotations

import click

from mliapdb.analysis.report import CONVENTIONS, KINDS
from mliapdb.cli.common import db_option, resolve_db
from mliapdb.cli.output import status


@click.command("report")
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), metavar="DIR",
    help="Directory for report.md, report.html and the PNG figures (created if missing).",
)
@click.option(
    "--convention", "conventions", multiple=True, type=click.Choice(CONVENTIONS),
    help="Ehull convention (repeatable; default: every one with results).",
)
@click.option(
    "--kind", type=click.Choice(list(KINDS)), default="relax", show_default=True,
    help="Calculation kind: relaxed, symmetry-constrained relaxed, or single-point energies.",
)
@click.option("--model", "models", multiple=True, help="Only this model (repeatable).")
@db_option
@click.pass_context
def report(ctx, out_dir, conventions, kind, models, db_path) -> None:
    """Write the study report: per-convention tables of Ehull, energy and stability errors
    (meV/atom), the study claims, and figures. Prints the files written on stdout."""
    from mliapdb.analysis.report import build_report

    result = build_report(
        resolve_db(ctx, db_path), out_dir, conventions=conventions or None, kind=kind,
        models=models or None, log=status,
    )
    for path in result.files:
        click.echo(str(path))
