"""The workspace: ``.agent/`` with its config file and its SQLite database.

Connection discipline, for every connection the package opens:

* WAL journal, so readers never block the writer;
* ``busy_timeout``, so a writer waits for another instead of failing;
* ``isolation_level=None`` and an explicit ``BEGIN IMMEDIATE`` for every write
  transaction: a deferred transaction that reads and then writes fails with
  SQLITE_BUSY_SNAPSHOT without waiting.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from acode_sync import text
from acode_sync.errors import UsageError, WorkspaceBusy
from acode_sync.migrations import upgrade_local

if TYPE_CHECKING:
    from acode_sync.config import SyncConfig

AGENT_DIR = ".agent"
DB_NAME = "workspace.db"
CONFIG_NAME = "config.yml"
WORKSPACE_ENV = "ACODE_WORKSPACE"
BUSY_TIMEOUT_MS = 5000
WAL_SIZE_LIMIT = 16 * 1024 * 1024  # bytes a WAL keeps after a checkpoint resets it
SQLITE_MAGIC = b"SQLite format 3\x00"


class Workspace(NamedTuple):
    root: Path

    @property
    def agent_dir(self) -> Path:
        return self.root / AGENT_DIR

    @property
    def db_path(self) -> Path:
        return self.agent_dir / DB_NAME

    @property
    def config_path(self) -> Path:
        return self.agent_dir / CONFIG_NAME

    @property
    def conflicts_dir(self) -> Path:
        return self.agent_dir / "conflicts"

    def config(self) -> SyncConfig:
        # Imported here: a command that reads no config (`acode chat add`) does
        # not build its classes (issue 10).
        from acode_sync.config import load_config

        return load_config(self.config_path)

    def connect(self, *, create: bool = False, readonly: bool = False) -> sqlite3.Connection:
        """Open the database; refuse a missing one unless ``create`` (init does).

        A workspace made by an earlier version gets the local migrations it
        lacks here, so an upgrade needs no step before the next command (each
        file is its own transaction and safe to meet twice).

        ``readonly`` is for commands that only read: on a workspace this
        process cannot write they open the file read-only instead of failing.
        A command that writes is refused up front, in one line, on such a
        workspace (it is read-only, not corrupt)."""
        if not create and not self.db_path.exists():
            raise UsageError(f"{self.db_path}: no workspace database; run 'acode-sync init' first")
        check_sqlite_file(self.db_path)
        blocker = self.read_only_part()
        if blocker is not None:
            if readonly:
                return connect_read_only(self.db_path)
            raise UsageError(
                f"{blocker}: read-only (no write permission), and this command writes to "
                "the workspace; reading commands (status, queue, chat list) still work"
            )
        conn = connect(self.db_path)
        if not create:
            try:
                upgrade_local(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    def read_only_part(self) -> Path | None:
        """The first of .agent/ and the database files this process cannot write."""
        if not self.agent_dir.is_dir():
            return None  # init creates it; nothing to refuse yet
        if not os.access(self.agent_dir, os.W_OK):
            return self.agent_dir
        for suffix in ("", "-wal", "-shm"):
            path = self.db_path.with_name(self.db_path.name + suffix)
            if path.exists() and not os.access(path, os.W_OK):
                return path
        return None


def find_workspace(explicit: str | os.PathLike[str] | None = None) -> Workspace:
    """``--workspace DIR``, else ``$ACODE_WORKSPACE``, else the nearest ``.agent/``."""
    chosen = explicit or os.environ.get(WORKSPACE_ENV)
    if chosen:
        root = Path(chosen).expanduser().resolve()
        if not root.is_dir():
            raise UsageError(f"{root}: workspace directory does not exist")
        return Workspace(root)
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / AGENT_DIR).is_dir():
            return Workspace(candidate)
    raise UsageError(
        f"no {AGENT_DIR}/ in {here} or any parent; run 'acode-sync init' or pass --workspace"
    )


# Files whose header this process has read: (st_dev, st_ino).
_CHECKED: set[tuple[int, int]] = set()


def check_sqlite_file(path: Path) -> None:
    """Refuse a file that exists but is not an SQLite database, before touching it.

    Once per file and process: closing *any* descriptor of a file drops every
    POSIX lock this process holds on it, SQLite's included. A process that
    keeps a connection open (the engine's thread) and read the header again
    would lose its locks, and another process could then checkpoint and reset
    the WAL under it: "database disk image is malformed"."""
    try:
        stat = path.stat()
    except OSError:
        stat = None
    if stat is not None and (stat.st_dev, stat.st_ino) in _CHECKED:
        return
    try:
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not an SQLite database") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    if head and head != SQLITE_MAGIC:
        raise UsageError(f"{path}: not an SQLite database (file header does not match)")
    if head and stat is not None:
        _CHECKED.add((stat.st_dev, stat.st_ino))


def connect(path: Path | str, *, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Open an SQLite connection with the package's discipline."""
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Takes effect only in a file with no table yet (a new workspace), and
        # only before journal_mode writes the header; elsewhere it waits for
        # migration 0007's VACUUM. Pruning then gives freed pages back.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        # A big drain or pull grows the WAL past the auto-checkpoint size while
        # a reader holds it back; without a limit the file keeps that size.
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        # A write that fires a capture trigger keeps a statement journal (the
        # original of each page it changes, to undo the statement alone). On
        # disk, once one statement of a big transaction outgrows SQLite's
        # 64 KiB in-memory part, every later one pays two write() calls per
        # page: the journal stays in memory (docs/BENCHMARKS.md, issue 9).
        conn.execute("PRAGMA temp_store = MEMORY")
        # The acknowledgement replaces outbox rows (REPLACE INTO, queries.sql
        # 'ack_synced'); its deletes fire the queue tally's delete trigger
        # only with this on. Many builds default to it, not all.
        conn.execute("PRAGMA recursive_triggers = ON")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise UsageError(f"{path}: not a usable SQLite database ({exc})") from None
    conn.row_factory = sqlite3.Row
    # Any client can store bytes that are not UTF-8: read them without raising
    # (acode_sync.text), so one bad row never stops a command that meets it.
    conn.text_factory = text.decode
    return conn


def connect_read_only(path: Path) -> sqlite3.Connection:
    """Open a database this process cannot write, for reading.

    ``mode=ro`` keeps WAL's locking, so a writer elsewhere (another user's
    ``run``) is seen consistently; it needs the ``-shm`` file, which SQLite
    cannot create in a read-only directory. Then ``immutable=1`` is the only
    way in: it reads the main file without locks or WAL, which is what a
    directory nobody here can write holds. No ``journal_mode`` pragma: it is
    a write, and a WAL database stays WAL.
    """
    last: sqlite3.Error | None = None
    for options in ("mode=ro", "mode=ro&immutable=1"):
        uri = f"{path.resolve().as_uri()}?{options}"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA query_only = ON")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            conn.close()
            last = exc
            continue
        conn.row_factory = sqlite3.Row
        return conn
    raise UsageError(f"{path}: cannot open read-only ({last})")


def data_version(conn: sqlite3.Connection) -> int:
    """Moves with each commit by another connection (``PRAGMA data_version``)."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether the error is another writer holding the file past the busy timeout."""
    return "locked" in str(exc) or "busy" in str(exc)


@contextmanager
def write(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on error.

    Another writer holding the file past ``busy_timeout`` is
    :class:`WorkspaceBusy` here, where it happens, not a driver error."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if not is_busy(exc):
            raise
        raise WorkspaceBusy(
            f"workspace busy: another writer held the workspace database for more than "
            f"{BUSY_TIMEOUT_MS / 1000:g}s ({exc}); nothing was written, try again"
        ) from None
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
