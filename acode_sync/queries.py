"""Named SQL statements of the local store, read once per process.

The multi-line statements of the package live in ``sql/sqlite/queries.sql``
(shipped in the wheel as ``acode_sync.sql``, like the migrations), one block
per statement, procrastinate's ``queries.sql`` pattern::

    -- name: apply_chats
    -- What it does and why (comment lines right after the name).
    INSERT INTO chats ...;

:func:`query` returns a statement by name; an unknown name raises at once
(:class:`LookupError`). A test checks that every name in the file is used and
every name used is in the file. Values are always parameters; the one-line
statements stay beside the code that runs them.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

LOCAL_FILE = ("sqlite", "queries.sql")

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """The ``-- name:`` blocks of ``text``: name -> statement.

    A block's statement runs from its first line that is not a comment to the
    first line that ends with ``;`` (left out); comments before it describe
    it, comments after it belong to what follows. Text before the first name
    is the file's header."""
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        lines: list[str] = []
        for line in body.splitlines():
            if not lines and (not line.strip() or line.lstrip().startswith("--")):
                continue
            lines.append(line)
            if line.rstrip().endswith(";"):
                break
        else:
            raise ValueError(f"query {name!r} has no statement ending with ';'")
        queries[name] = "\n".join(lines).rstrip().removesuffix(";")
    return queries


@functools.cache
def local_queries() -> dict[str, str]:
    """Every named statement of ``sql/sqlite/queries.sql`` (read once)."""
    source = resources.files("acode_sync.sql").joinpath(*LOCAL_FILE)
    return parse(source.read_text(encoding="utf-8"))


def query(name: str) -> str:
    """The named local statement; a name the file lacks is a bug: it raises."""
    try:
        return local_queries()[name]
    except KeyError:
        raise LookupError(f"no query {name!r} in sql/{'/'.join(LOCAL_FILE)}") from None
