"""MP entries, Wyckoff-resolved symmetry, the DFT hull and the MP API (above store)."""
