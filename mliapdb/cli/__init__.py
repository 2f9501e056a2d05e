"""The ``mliapdb`` command line: one module per command group."""
