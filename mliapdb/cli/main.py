"""Entry point: ``mliapdb [--db PATH] COMMAND``. Errors become one ``Error: ...`` line on
stderr and exit status 1."""

from __future__ import annotations

import sys

import click

from mliapdb import __version__
from mliapdb.cli import ingest, ingest_mp, models, query, report, snapshot, sql
from mliapdb.config import DEFAULT_DB
from mliapdb.errors import MliapdbError


class MliapdbGroup(click.Group):
    """A click group that turns :class:`MliapdbError` into a one-line error."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MliapdbError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=MliapdbGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    default=DEFAULT_DB,
    show_default=True,
    envvar="MLIAPDB_DB",
    metavar="PATH",
    help="DuckDB database file, or http(s) URL of a snapshot (read-only) (env MLIAPDB_DB).",
)
@click.version_option(__version__, prog_name="mliapdb")
def cli(db: str) -> None:
    """mliapdb: MP entries, Wyckoff symmetry and MLIAP energies in one DuckDB file, with SQL
    views that measure how well MLIAPs reproduce DFT stability."""


cli.add_command(ingest.ingest)
ingest.ingest.add_command(ingest_mp.mp)
cli.add_command(query.query)
cli.add_command(sql.sql)
cli.add_command(models.models)
cli.add_command(report.report)
cli.add_command(snapshot.snapshot)

if __name__ == "__main__":  # pragma: no cover
    cli()
