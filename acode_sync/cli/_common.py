"""What every command shares: the error boundary, --workspace, the open session."""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from acode_sync.errors import EXIT_SYNC_INCOMPLETE, AcodeSyncError, SyncIncomplete, UsageError
from acode_sync.text import printable
from acode_sync.workspace import WORKSPACE_ENV, Workspace, find_workspace

if TYPE_CHECKING:
    # The engine pulls in psycopg: only the commands that sync import it; the
    # config, only those that read it.
    from acode_sync.config import SyncConfig
    from acode_sync.engine import CycleReport, SyncEngine

F = TypeVar("F", bound=Callable[..., Any])


class AcodeGroup(click.Group):
    """The error boundary: every expected error becomes one line and an exit code
    here, and nowhere else (commands raise, they do not exit)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AcodeSyncError as exc:
            if not exc.shown:
                click.echo(f"Error: {printable(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        except sqlite3.Error as exc:
            click.echo(f"Error: local database: {exc}", err=True)
            ctx.exit(EXIT_SYNC_INCOMPLETE)


def report_cycle(report: CycleReport, *, quiet: bool, announced: bool = False) -> None:
    """Print a cycle's report (``announced``: ``Syncing...`` is out already); an
    incomplete cycle ends the command with exit 1."""
    from acode_sync.cli import formatting

    for line, to_stderr in formatting.cycle_report(report, quiet=quiet, announced=announced):
        click.echo(line, err=to_stderr)
    if report.incomplete:
        raise SyncIncomplete()


_VERBOSITY = "acode_sync.verbosity"
_LOGS_NEEDED = "acode_sync.logs_needed"


def apply_logging(ctx: click.Context, *, needed: bool = False) -> None:
    """Set the package's log level from the -v/-q seen so far in this invocation
    (``ctx.meta`` is one dict for the whole command line): the last one wins,
    wherever it stood, and an invocation without either logs warnings.

    The logging package is loaded only when something may log: -v or -q was
    given, the command is one that logs (``needed``: the lazy groups say so
    when they load it, see ``acode_sync.cli.LOGS_NOTHING``), or logging is
    loaded already. ``acode chat add`` logs nothing at the default level, and
    does not pay for the import (issue 10)."""
    if needed:
        ctx.meta[_LOGS_NEEDED] = True
    verbosity = int(ctx.meta.get(_VERBOSITY, 0))
    if verbosity or ctx.meta.get(_LOGS_NEEDED) or "logging" in sys.modules:
        from acode_sync.cli import logs

        logs.configure(verbosity)


def debug(message: str, *args: object) -> None:
    """A debug line of the CLI. Without logging loaded no -v was given, so the
    line would not show: nothing is loaded for it."""
    if "logging" in sys.modules:
        import logging

        logging.getLogger(__name__).debug(message, *args)


def is_quiet(ctx: click.Context | None = None) -> bool:
    """Whether -q/--quiet was given anywhere on the command line (and not undone by a later -v)."""
    ctx = ctx or click.get_current_context()
    return bool(ctx.meta.get(_VERBOSITY, 0) < 0)


def _verbosity(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[_VERBOSITY] = 1 if param.name == "verbose" else -1
    apply_logging(ctx)


def verbosity_options(command: F) -> F:
    """``-v/--verbose`` and ``-q/--quiet``, on every group and command, so they
    work wherever a user puts them (``acode -v sync now``, ``acode-sync now -v``)."""
    command = click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        callback=_verbosity,
        help="Log only errors; no progress bar (now/resume: only problems).",
    )(command)
    return click.option(
        "-v",
        "--verbose",
        is_flag=True,
        expose_value=False,
        callback=_verbosity,
        help="Log what the engine does (to standard error).",
    )(command)


class Session:
    """The workspace a command works on, opened lazily and closed with the context."""

    def __init__(self, ctx: click.Context, workspace_dir: str | None) -> None:
        self._ctx = ctx
        self._workspace_dir = workspace_dir

    @cached_property
    def workspace(self) -> Workspace:
        found = find_workspace(self._workspace_dir)
        debug("workspace %s", found.root)
        return found

    def new_workspace(self) -> Workspace:
        """Where ``init`` creates one: --workspace, else $ACODE_WORKSPACE, else here."""
        chosen = self._workspace_dir or os.environ.get(WORKSPACE_ENV)
        root = Path(chosen).expanduser().resolve() if chosen else Path.cwd().resolve()
        if not root.is_dir():
            raise UsageError(f"{root}: workspace directory does not exist")
        return Workspace(root)

    @cached_property
    def config(self) -> SyncConfig:
        return self.workspace.config()

    @cached_property
    def conn(self) -> sqlite3.Connection:
        """A connection for a command that writes (refused on a read-only workspace)."""
        conn = self.workspace.connect()
        self._ctx.call_on_close(conn.close)
        return conn

    @cached_property
    def reader(self) -> sqlite3.Connection:
        """A connection for a command that only reads: works on a read-only workspace."""
        if "conn" in self.__dict__:
            return self.conn
        conn = self.workspace.connect(readonly=True)
        self._ctx.call_on_close(conn.close)
        return conn

    def engine(self) -> SyncEngine:
        """The engine, announcing on standard error when it waits for the lock."""
        from acode_sync.engine import SyncEngine

        return SyncEngine(
            self.workspace, self.config, on_wait=lambda message: click.echo(message, err=True)
        )


def count_option(flag: str, name: str, default: int, help: str) -> Callable[[F], F]:
    """A whole-number option >= 0 shown as N, with its default in --help."""
    return click.option(
        flag,
        name,
        type=click.IntRange(min=0),
        default=default,
        show_default=True,
        metavar="N",
        help=help,
    )


def workspace_option(command: F) -> F:
    """``--workspace DIR`` on every command; the session lands in ``ctx.obj``."""

    def remember(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value is not None or not isinstance(ctx.find_root().obj, Session):
            ctx.find_root().obj = Session(ctx.find_root(), value)

    command = verbosity_options(command)
    return click.option(
        "--workspace",
        type=click.Path(file_okay=False),
        envvar="ACODE_WORKSPACE",
        expose_value=False,
        is_eager=True,
        callback=remember,
        help="Workspace directory (default: nearest with .agent/; env ACODE_WORKSPACE).",
    )(command)


def session() -> Session:
    ctx = click.get_current_context()
    obj = ctx.find_root().obj
    if not isinstance(obj, Session):
        obj = ctx.find_root().obj = Session(ctx.find_root(), None)
    return obj
