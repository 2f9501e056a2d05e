"""mliapdb: a versioned DuckDB of Materials Project entries, Wyckoff-resolved symmetry and
MLIAP energies, with SQL views that measure how well MLIAPs reproduce DFT stability."""

__version__ = "0.1.0"
