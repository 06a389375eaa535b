"""Apply the shipped SQL migrations and record what ran.

Migrations are numbered files in ``sql/sqlite`` (local) and ``sql/postgres``
(server), in the folder of the package ``acode_sync.sql``. Each file records
itself in its side's migrations table, so applying one by hand (``sqlite3 ...
< FILE``, ``psql -f FILE``) and applying it here are the same thing.

Every command opens its workspace through :func:`upgrade_local`; a workspace
that already has every shipped migration costs it two small queries and a
directory listing (the names): no file is read or hashed (issue 10).

Released migrations are frozen (tests/migration/test_frozen_migrations.py pins
their checksums). The runner records the sha256 of each file it applies
(``acode_sync.migrations.sha256``, server 0004; ``sync_migration_checksums``,
local 0005) and, before applying anything, refuses with
:class:`MigrationChanged` a recorded migration whose shipped file differs. A
migration applied by hand, or before the checksums were kept, has none:
unknown, accepted.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from typing import TYPE_CHECKING, Any, NamedTuple

from acode_sync.errors import MigrationChanged, NeedsAdmin, SetupError
from acode_sync.queries import sql_dir

if TYPE_CHECKING:
    import psycopg

# psycopg is imported where the server is reached, not here: every command
# opens a workspace through this module, and `acode chat add` must start fast.

LOCAL_TABLE = "sync_migrations"
LOCAL_CHECKSUMS = "sync_migration_checksums"


class Migration(NamedTuple):
    name: str
    sql: str
    sha256: str  # of the file's bytes


def shipped(side: str) -> list[Migration]:
    """The migrations of ``side`` ('sqlite' or 'postgres'), in order."""
    return list(_shipped(side))


@functools.cache
def shipped_names(side: str) -> tuple[str, ...]:
    """The names of the migrations of ``side``, in order, from the file names alone."""
    return tuple(
        sorted(
            entry.removesuffix(".sql")
            for entry in os.listdir(sql_dir() / side)
            if entry.endswith(".sql") and entry[:4].isdigit()
        )
    )


@functools.cache
def _shipped(side: str) -> tuple[Migration, ...]:
    # Read once per process, and only by a process that applies or checks them.
    import hashlib

    found = []
    for name in shipped_names(side):
        data = (sql_dir() / side / f"{name}.sql").read_bytes()
        found.append(Migration(name, data.decode("utf-8"), hashlib.sha256(data).hexdigest()))
    return tuple(found)


def canonical_schema(side: str) -> str:
    """The full schema of a fresh install (``sql/<side>/schema.sql``)."""
    return (sql_dir() / side / "schema.sql").read_text("utf-8")


def _table_names(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def applied_local(conn: sqlite3.Connection) -> set[str]:
    if LOCAL_TABLE not in _table_names(conn):
        return set()
    return {row[0] for row in conn.execute(f"SELECT name FROM {LOCAL_TABLE}")}


def migrate_local(conn: sqlite3.Connection) -> list[str]:
    """Apply the local migrations not yet applied; return the names applied now."""
    return _apply_local(conn, applied_local(conn))


def upgrade_local(conn: sqlite3.Connection) -> list[str]:
    """Like :func:`migrate_local`, but only on a database some migration already
    made a workspace (never turns another SQLite file into one), and with
    nothing to do (every shipped name recorded) it reads no migration file:
    the recorded checksums are checked before applying something, and by
    ``migrate --local``."""
    done = applied_local(conn)
    if not done or done.issuperset(shipped_names("sqlite")):
        return []
    return _apply_local(conn, done)


def _apply_local(conn: sqlite3.Connection, done: set[str]) -> list[str]:
    tables = _table_names(conn)
    if LOCAL_CHECKSUMS in tables:
        refuse_changed("local", dict(conn.execute(f"SELECT name, sha256 FROM {LOCAL_CHECKSUMS}")))
    pending = [migration for migration in shipped("sqlite") if migration.name not in done]
    ran = []
    if pending:
        # A VACUUM (0007) copies the file through a temporary database: on
        # disk, even where the connection keeps its temporary storage in memory.
        temp_store = int(conn.execute("PRAGMA temp_store").fetchone()[0])
        conn.execute("PRAGMA temp_store = FILE")
        try:
            for migration in pending:
                # Each file is its own BEGIN IMMEDIATE ... COMMIT and records itself.
                conn.executescript(migration.sql)
                ran.append(migration.name)
        finally:
            conn.execute(f"PRAGMA temp_store = {temp_store}")
    if ran:
        sums = {m.name: m.sha256 for m in shipped("sqlite")}
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            f"INSERT OR IGNORE INTO {LOCAL_CHECKSUMS} (name, sha256) VALUES (?, ?)",
            [(name, sums[name]) for name in ran],
        )
        conn.execute("COMMIT")
    return ran


def refuse_changed(side: str, recorded: dict[str, str | None]) -> None:
    """Raise MigrationChanged for the first recorded checksum that differs from
    the shipped file's (``recorded``: name -> sha256, None when unknown)."""
    for migration in shipped("sqlite" if side == "local" else "postgres"):
        known = recorded.get(migration.name)
        if known is not None and known != migration.sha256:
            raise MigrationChanged(side, migration.name, known, migration.sha256)


def pending_local(conn: sqlite3.Connection) -> list[str]:
    done = applied_local(conn)
    return [m.name for m in shipped("sqlite") if m.name not in done]


def applied_remote(conn: psycopg.Connection[Any]) -> set[str]:
    return set(_recorded_remote(conn))


def _recorded_remote(conn: psycopg.Connection[Any]) -> dict[str, str | None]:
    """name -> sha256 of the migrations the server records (None: unknown)."""
    row = conn.execute("SELECT to_regclass('acode_sync.migrations') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return {}
    column = "sha256" if _keeps_checksums(conn) else "NULL::text"
    return dict(conn.execute(f"SELECT name, {column} FROM acode_sync.migrations").fetchall())


def _keeps_checksums(conn: psycopg.Connection[Any]) -> bool:
    """Whether acode_sync.migrations has its sha256 column (server 0004)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attname = 'sha256' "
        "AND attrelid = to_regclass('acode_sync.migrations') AND NOT attisdropped)"
    ).fetchone()
    return bool(row and row[0])


def migrate_remote(conninfo: str, *, setting: str | None = None) -> list[str]:
    """Apply the server migrations not yet applied (run by an admin role).

    ``setting`` names where ``conninfo`` came from, for the message of a
    SetupError (a refused login, or a role without the rights: NeedsAdmin).
    """
    try:
        return _migrate_remote(conninfo)
    except SetupError as exc:
        exc.setting = setting
        raise


def _migrate_remote(conninfo: str) -> list[str]:
    import psycopg

    from acode_sync import remote

    ran = []
    with remote.connect(conninfo, autocommit=True) as conn:
        try:
            recorded = _recorded_remote(conn)
            refuse_changed("server", recorded)
            for migration in shipped("postgres"):
                if migration.name in recorded:
                    continue
                # No parameters: psycopg sends the file with the simple query
                # protocol, so its BEGIN ... COMMIT and many statements go as one.
                conn.execute(migration.sql.encode())
                ran.append(migration.name)
            if ran and _keeps_checksums(conn):
                sums = {m.name: m.sha256 for m in shipped("postgres")}
                with conn.transaction():
                    conn.cursor().executemany(
                        "UPDATE acode_sync.migrations SET sha256 = %s WHERE name = %s",
                        [(sums[name], name) for name in ran],
                    )
        except psycopg.errors.InsufficientPrivilege as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "permission denied"
            raise NeedsAdmin(
                f"migrate --remote needs an admin role (one that may create schemas and "
                f"roles in database {conn.info.dbname}); it ran as role {conn.info.user} "
                f"({first})",
                "run it with an admin's URL: ACODE_SYNC_REMOTE_URL=postgresql://ADMIN@HOST:PORT/DB"
                " acode-sync migrate --remote",
            ) from None
    return ran
