"""Apply the shipped SQL migrations and record what ran.

Migrations are numbered files in ``sql/sqlite`` (local) and ``sql/postgres``
(server), read through importlib.resources. Each file records itself in its
side's migrations table, so applying one by hand (``sqlite3 ... < FILE``,
``psql -f FILE``) and applying it here are the same thing.
"""

from __future__ import annotations

import functools
import sqlite3
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
import sqlite_utils

from acode_sync import remote
from acode_sync.errors import NeedsAdmin, SetupError

LOCAL_TABLE = "sync_migrations"


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str


def shipped(side: str) -> list[Migration]:
    """The migrations of ``side`` ('sqlite' or 'postgres'), in order."""
    return list(_shipped(side))


@functools.cache
def _shipped(side: str) -> tuple[Migration, ...]:
    # Read once per process: every open of a workspace checks what is pending.
    folder = resources.files("acode_sync.sql").joinpath(side)
    found = [
        Migration(entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql") and entry.name[:4].isdigit()
    ]
    return tuple(sorted(found, key=lambda migration: migration.name))


def canonical_schema(side: str) -> str:
    """The full schema of a fresh install (``sql/<side>/schema.sql``)."""
    return resources.files("acode_sync.sql").joinpath(side, "schema.sql").read_text("utf-8")


def applied_local(conn: sqlite3.Connection) -> set[str]:
    db = sqlite_utils.Database(conn)
    if LOCAL_TABLE not in db.table_names():
        return set()
    return {row["name"] for row in db[LOCAL_TABLE].rows}


def migrate_local(conn: sqlite3.Connection) -> list[str]:
    """Apply the local migrations not yet applied; return the names applied now."""
    return _apply_local(conn, applied_local(conn))


def upgrade_local(conn: sqlite3.Connection) -> list[str]:
    """Like :func:`migrate_local`, but only on a database some migration already
    made a workspace (never turns another SQLite file into one)."""
    done = applied_local(conn)
    return _apply_local(conn, done) if done else []


def _apply_local(conn: sqlite3.Connection, done: set[str]) -> list[str]:
    ran = []
    for migration in shipped("sqlite"):
        if migration.name in done:
            continue
        # Each file is its own BEGIN IMMEDIATE ... COMMIT and records itself.
        conn.executescript(migration.sql)
        ran.append(migration.name)
    return ran


def pending_local(conn: sqlite3.Connection) -> list[str]:
    done = applied_local(conn)
    return [m.name for m in shipped("sqlite") if m.name not in done]


def applied_remote(conn: psycopg.Connection[Any]) -> set[str]:
    row = conn.execute("SELECT to_regclass('acode_sync.migrations') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return set()
    return {name for (name,) in conn.execute("SELECT name FROM acode_sync.migrations")}


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
    ran = []
    with remote.connect(conninfo, autocommit=True) as conn:
        try:
            done = applied_remote(conn)
            for migration in shipped("postgres"):
                if migration.name in done:
                    continue
                # No parameters: psycopg sends the file with the simple query
                # protocol, so its BEGIN ... COMMIT and many statements go as one.
                conn.execute(migration.sql.encode())
                ran.append(migration.name)
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
