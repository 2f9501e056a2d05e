"""The one exception type the CLI turns into a one-line ``Error: ...`` and exit status 1."""


class MliapdbError(Exception):
    """A user-facing error: the message names the file/entry and says what to do next."""
