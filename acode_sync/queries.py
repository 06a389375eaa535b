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
import importlib
import re
from pathlib import Path

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
def sql_dir() -> Path:
    """The folder of the package ``acode_sync.sql`` (``sql/`` of the checkout in an
    editable install, ``acode_sync/sql/`` of a wheel): a plain directory either
    way, read with plain file calls. importlib.resources would do the same for
    a package on disk, after an import that costs ``acode chat add`` more than
    its whole insert (issue 10)."""
    return Path(next(iter(importlib.import_module("acode_sync.sql").__path__)))


@functools.cache
def local_queries() -> dict[str, str]:
    """Every named statement of ``sql/sqlite/queries.sql`` (read once)."""
    return parse(sql_dir().joinpath(*LOCAL_FILE).read_text(encoding="utf-8"))


def query(name: str) -> str:
    """The named local statement; a name the file lacks is a bug: it raises."""
    try:
        return local_queries()[name]
    except KeyError:
        raise LookupError(f"no query {name!r} in sql/{'/'.join(LOCAL_FILE)}") from None
