"""The one exception type the CLI turns into a one-line ``Error: ...`` and exit status 1, and
the escaping of text that others wrote before it reaches a terminal."""

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class MliapdbError(Exception):
    """A user-facing error: the message names the file/entry and says what to do next."""


def printable(text: str) -> str:
    """``text`` with every control character (C0, DEL, C1: ESC among them) written as a
    visible ``\\xNN`` escape, so that nothing a publisher wrote can drive the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)

