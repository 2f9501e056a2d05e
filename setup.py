"""The build step pyproject.toml cannot say: a wheel carries the repository's ``schema/`` (the
numbered migrations and the views) and ``snapshots/`` (the published snapshot index) as
package data in ``mliapdb/_data/``, where :mod:`mliapdb.config` finds them. An editable
install reads them from the checkout instead."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("schema", "snapshots")


class BuildWithData(build_py):
    """``build_py`` that also copies :data:`SHIPPED` into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        root = Path(__file__).resolve().parent
        for name in SHIPPED:
            target = Path(self.build_lib) / "mliapdb" / "_data" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(root / name, target,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildWithData})
