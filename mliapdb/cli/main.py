"""Entry point: ``mliapdb [--db PATH] COMMAND``. Errors become one ``Error: ...`` line on
stderr and exit status 1 (click's usage errors keep click's format and exit status 2); an
unexpected exception is reported as an internal error, with its traceback only when
``MLIAPDB_DEBUG=1``; Ctrl-C exits 130."""

from __future__ import annotations

import errno
import os
import re
import sys

import click

from mliapdb import __version__
from mliapdb.cli import (
    export,
    info,
    ingest,
    ingest_mp,
    ingest_predictions,
    models,
    query,
    report,
    snapshot,
    sql,
)
from mliapdb.config import DEFAULT_DB
from mliapdb.errors import MliapdbError

DEBUG_ENV = "MLIAPDB_DEBUG"
"""Set to 1 to get the traceback of an unexpected error instead of its one-line report."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")

_OS_HINTS = {
    errno.EACCES: "check its permissions, or use another path",
    errno.EPERM: "check its permissions, or use another path",
    errno.EROFS: "the file system is read-only - use another path",
    errno.ENAMETOOLONG: "use a shorter name",
    errno.ENOSPC: "free some disk space and run it again",
    errno.EDQUOT: "free some disk space and run it again",
    errno.EISDIR: "pass a file, not a folder",
    errno.ENOTDIR: "a part of the path is not a folder - check the path",
    errno.ENOENT: "check the path",
}


def one_line(message: object) -> str:
    """``message`` as one printable line: control characters (newlines, terminal escape
    sequences) become spaces, undecodable bytes of file names ``\\xNN``."""
    text = str(message)
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # lone surrogates that are no escaped bytes
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL.sub(" ", text).strip()


def os_error_message(exc: OSError) -> str:
    """One line naming the path(s) of an OSError, what went wrong and what to do."""
    what = exc.strerror or str(exc) or type(exc).__name__
    paths = [os.fsdecode(f) if isinstance(f, bytes) else str(f)
             for f in (exc.filename, exc.filename2) if f is not None]
    hint = _OS_HINTS.get(exc.errno, "check the path and try again")
    where = " -> ".join(paths)
    return f"{where}: {what} - {hint}" if where else f"{what} - {hint}"


def _one_line_click(exc: click.exceptions.ClickException) -> None:
    """Make click's error message one printable line: an argument may hold control
    characters, and a missing choice option lists its choices on lines of their own."""
    text = one_line(exc.format_message())
    exc.message = text
    exc.format_message = lambda: text  # type: ignore[method-assign]


def _fail(message: object, code: int = 1) -> None:
    click.echo(f"Error: {one_line(message)}", err=True)
    sys.exit(code)


class MliapdbGroup(click.Group):
    """A click group that turns :class:`MliapdbError` and every other error of a command into
    one ``Error: ...`` line: an OSError names its path, anything else is an internal error
    (its traceback with ``MLIAPDB_DEBUG=1``). click's own exceptions pass through, their
    message made one printable line (an argument may hold control characters)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.ClickException as exc:
            _one_line_click(exc)
            raise

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MliapdbError as exc:
            _fail(exc)
        except click.exceptions.ClickException as exc:
            _one_line_click(exc)
            raise
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except BrokenPipeError:  # e.g. `mliapdb query ... | head`: the reader left
            _quiet_stdout()
            sys.exit(1)
        except (SystemExit, GeneratorExit):
            raise
        except BaseException as exc:  # also a Rust panic of an extension (pyo3)
            if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
                raise
            if isinstance(exc, OSError):
                _fail(os_error_message(exc))
            message = str(exc).splitlines()[0] if str(exc) else ""
            _fail(f"internal error: {type(exc).__name__}: {message[:300]} - please report it "
                  f"(set {DEBUG_ENV}=1 for the traceback)")


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush stays silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (tests)
        pass


@click.group(cls=MliapdbGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    default=DEFAULT_DB,
    show_default=True,
    envvar="MLIAPDB_DB",
    metavar="PATH",
    help="DuckDB database file, or http(s) URL of a snapshot (read-only) (env MLIAPDB_DB).",
)
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0),
    default=None,
    envvar="MLIAPDB_LOCK_TIMEOUT",
    metavar="SECONDS",
    help="Seconds to wait for a database another process holds (a commit of a running "
    "'ingest relax'), 60 by default; 0: fail at once (env MLIAPDB_LOCK_TIMEOUT).",
)
@click.version_option(__version__, prog_name="mliapdb")
@click.pass_context
def cli(ctx: click.Context, db: str, lock_timeout: float | None) -> None:
    """mliapdb: MP entries, Wyckoff symmetry and MLIAP energies in one DuckDB file, with SQL
    views that measure how well MLIAPs reproduce DFT stability."""
    if lock_timeout is not None:
        from mliapdb.store.database import LockWait, waiting_for_locks

        ctx.with_resource(waiting_for_locks(LockWait(timeout_s=lock_timeout)))


cli.add_command(ingest.ingest)
ingest.ingest.add_command(ingest_mp.mp)
ingest.ingest.add_command(ingest_predictions.predictions)
cli.add_command(query.query)
cli.add_command(sql.sql)
cli.add_command(models.models)
cli.add_command(report.report)
cli.add_command(snapshot.snapshot)
cli.add_command(export.export)
cli.add_command(info.info)

if __name__ == "__main__":  # pragma: no cover
    cli()
