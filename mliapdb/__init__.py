"""mliapdb: a versioned DuckDB of Materials Project entries, Wyckoff-resolved symmetry and
MLIAP energies, with SQL views that measure how well MLIAPs reproduce DFT stability.

``mliapdb.open(path_or_url)`` gives a :class:`~mliapdb.api.Database` whose methods run the
``mliapdb query`` statistics as pandas DataFrames and return pymatgen objects (docs/python.md).
Importing the package imports nothing else: the API loads on first use.
"""

__version__ = "0.1.0"

__all__ = ["Database", "__version__", "open"]


def __getattr__(name: str):
    if name in ("open", "Database"):
        from mliapdb import api

        return getattr(api, name)
    raise AttributeError(f"module 'mliapdb' has no attribute {name!r}")
