"""Local workspaces for the tests: real SQLite files in a temporary directory."""

from __future__ import annotations

import functools
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ParamSpec, TypeVar

import pytest
from click.testing import CliRunner, Result

from acode_sync.cli import acode, sync
from acode_sync.migrations import migrate_local
from acode_sync.workspace import Workspace, connect


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """An initialised workspace (config with defaults, migrated database)."""
    root = tmp_path / "ws"
    root.mkdir()
    result = CliRunner().invoke(sync, ["init", "--workspace", str(root)])
    assert result.exit_code == 0, result.output
    return Workspace(root)


@pytest.fixture
def db(workspace: Workspace) -> Iterator[sqlite3.Connection]:
    conn = workspace.connect()
    yield conn
    conn.close()


@pytest.fixture
def bare_db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """Just the migrated database file, no workspace around it."""
    conn = connect(tmp_path / "bare.db")
    migrate_local(conn)
    yield conn
    conn.close()


P = ParamSpec("P")
T = TypeVar("T")


class Cli:
    """Runs ``acode-sync``/``acode`` in-process against one workspace."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.runner = CliRunner()

    def sync(self, *args: str, input: str | None = None) -> Result:
        return self.runner.invoke(
            sync, [*args, "--workspace", str(self.workspace.root)], input=input
        )

    def acode(self, *args: str, input: str | None = None) -> Result:
        return self.runner.invoke(
            acode, [*args, "--workspace", str(self.workspace.root)], input=input
        )


@pytest.fixture
def cli(workspace: Workspace) -> Cli:
    return Cli(workspace)


def needs(tool: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """A test that runs an external tool of this machine's set-up (the sqlite3
    shell, psql): missing, the test fails saying so; a skip would pass unseen."""

    def wrap(test: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(test)
        def checked(*args: P.args, **kwargs: P.kwargs) -> T:
            assert shutil.which(tool), f"needs the {tool} command (Debian: sqlite3, postgresql)"
            return test(*args, **kwargs)

        return checked

    return wrap
