"""The error tree: its docstring is the tree of the classes, and a driver
error is translated where it happens."""

from __future__ import annotations

import inspect
import re
import sqlite3
from pathlib import Path

import pytest

from acode_sync import errors
from acode_sync.workspace import write


def test_the_docstring_tree_is_the_class_tree() -> None:
    doc = (errors.__doc__ or "").split("::\n\n", 1)[1].split("\n\n", 1)[0]
    drawn: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        found = re.match(r"^(?P<prefix>[│├└─ ]*)(?P<name>[A-Z]\w+)(\s{2,}|$)", line)
        if not found:
            continue  # a description carried on
        depth = len(found["prefix"])
        while stack and stack[-1][0] >= depth:
            stack.pop()
        drawn[found["name"]] = stack[-1][1] if stack else "Exception"
        stack.append((depth, found["name"]))
    classes = {
        name: cls.__bases__[0].__name__
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.AcodeSyncError)
    }
    assert drawn == classes


def test_a_locked_database_is_workspace_busy_where_the_write_begins(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    waiter = sqlite3.connect(path, isolation_level=None, timeout=0.05)
    try:
        busy = pytest.raises(errors.WorkspaceBusy, match="ACODE-SYNC-002: workspace busy")
        with busy, write(waiter):
            waiter.execute("INSERT INTO t VALUES (1)")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        waiter.close()
