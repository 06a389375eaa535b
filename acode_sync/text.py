"""Text any SQLite client may have written: read it safely, judge it, show it.

SQLite stores whatever bytes a client hands it as TEXT: invalid UTF-8 (``CAST(X'41FF42'
AS TEXT)``), NUL bytes, the UTF-8 encoding of a lone surrogate. Python's sqlite3
raises on the first such value a cursor meets, which would stop every command
that reads the row, and PostgreSQL refuses all of them. So:

* every connection reads TEXT through :func:`decode`, which keeps each bad byte
  as a lone surrogate (``surrogateescape``) instead of raising;
* :func:`problem` says what is wrong with one value (None when it is fit to
  upload); the upload path isolates the item that carries it;
* :func:`printable` shows such a value without raising on a terminal.
"""

from __future__ import annotations

import re

# Bad bytes come back as U+DC80..U+DCFF (surrogateescape); a lone surrogate
# written as a JSON escape (\\ud800) comes back as itself. Both, and NUL.
_UNFIT = re.compile("[\x00\ud800-\udfff]")


def decode(raw: bytes) -> str:
    """The connection's text factory: UTF-8, each invalid byte kept as a surrogate."""
    return raw.decode("utf-8", "surrogateescape")


def problem(value: str) -> str | None:
    """Why ``value`` cannot be uploaded, naming the first bad spot; None when fit."""
    found = _UNFIT.search(value)
    if found is None:
        return None
    char = found.group()
    offset = len(value[: found.start()].encode("utf-8", "surrogatepass"))
    if char == "\x00":
        return f"contains a NUL byte at byte {offset} (PostgreSQL text cannot hold it)"
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        return f"not valid UTF-8 (byte 0x{code - 0xDC00:02X} at byte {offset})"
    return f"contains a lone surrogate U+{code:04X} at byte {offset} (not valid Unicode)"


def printable(value: str) -> str:
    """``value`` fit for a terminal: each bad byte as ``\\xFF``, NUL as ``\\0``."""
    if _UNFIT.search(value) is None:
        return value
    return _UNFIT.sub(_escape, value)


def _escape(found: re.Match[str]) -> str:
    code = ord(found.group())
    if code == 0:
        return "\\0"
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02X}"
    return f"\\u{code:04X}"
