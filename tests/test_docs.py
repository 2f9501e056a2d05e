"""The checked-in docs say what the code does: CLI reference current, README commands real."""

from __future__ import annotations

from mliapdb.cli.docs import cli_reference
from mliapdb.config import REPO_ROOT


def test_cli_reference_is_current() -> None:
    assert (REPO_ROOT / "docs" / "cli.md").read_text() == cli_reference(), (
        "docs/cli.md is stale: run 'make docs'"
    )


def test_readme_commands_are_make_targets() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    makefile = (REPO_ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in readme
        assert f"\n{target}:" in makefile
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()
