"""``python -m mliapdb``: the command line."""

from mliapdb.cli.main import cli

if __name__ == "__main__":
    cli()
