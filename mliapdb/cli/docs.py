"""Generate ``docs/cli.md`` from the commands' ``--help`` (``python -m mliapdb.cli.docs``);
``tests/test_docs.py`` fails when the checked-in file is out of date."""

from __future__ import annotations

import click

HEADER = """# CLI reference

Generated from `--help` by `make docs` (`python -m mliapdb.cli.docs > docs/cli.md`); a test
checks that it is current. Data goes to stdout, progress and status to stderr; errors are one
`Error: ...` line with exit status 1.
"""


def _walk(command: click.Command, path: list[str]):
    yield path, command
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            yield from _walk(command.commands[name], [*path, name])


def cli_reference() -> str:
    from mliapdb.cli.main import cli

    parts = [HEADER]
    for path, command in _walk(cli, ["mliapdb"]):
        ctx = click.Context(command, info_name=" ".join(path), terminal_width=100,
                            help_option_names=["-h", "--help"],
                            max_content_width=100)
        parts.append(f"\n## `{' '.join(path)}`\n\n```text\n{command.get_help(ctx)}\n```\n")
    return "".join(parts)


if __name__ == "__main__":
    print(cli_reference(), end="")
