"""Everything that talks to PostgreSQL.

Driver errors are translated here, at the boundary: a connection that cannot
be made is :class:`ConnectionFailed` (ACODE-SYNC-001) with the password never
shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from acode_sync.errors import BatchFailed, ConnectionFailed, UsageError

CONNECT_TIMEOUT_SECONDS = 10


def redact(conninfo: str) -> str:
    """The connection string with any password replaced, fit to print."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "<unparsable connection string>"
    if "password" in params:
        params["password"] = "***"
    host = params.get("host", "localhost")
    port = params.get("port", "5432")
    user = params.get("user", "")
    dbname = params.get("dbname", "")
    return f"postgresql://{user}{'@' if user else ''}{host}:{port}/{dbname}"


def connect(conninfo: str, *, autocommit: bool = False, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a connection or raise ConnectionFailed naming the server (not the password)."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        raise UsageError(f"remote.url is not a valid PostgreSQL URL: {exc}") from None
    defaults: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "application_name": "acode-sync",
    }
    for key in params:
        defaults.pop(key, None)
    try:
        return psycopg.connect(conninfo, autocommit=autocommit, **defaults, **kwargs)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ConnectionFailed(f"cannot connect to {redact(conninfo)}: {reason}") from None


@dataclass(frozen=True)
class ItemResult:
    """The server's answer for one item of a pushed batch."""

    key: str
    outcome: str  # applied | duplicate | conflict | rejected
    version: int | None
    reason: str | None
    server_row: dict[str, Any] | None


# What a server that was never migrated, or a role never enrolled, answers.
# Nothing an item did: the cycle stops and no item is touched.
_SETUP_ERRORS = (
    psycopg.errors.UndefinedFunction,
    psycopg.errors.UndefinedTable,
    psycopg.errors.InvalidSchemaName,
    psycopg.errors.InsufficientPrivilege,
)


def _setup_problem(exc: psycopg.Error) -> BatchFailed:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return BatchFailed(
        f"the remote is not ready for acode-sync ({first}); run 'acode-sync migrate "
        "--remote' as an admin and GRANT acode_sync_device to this device's role"
    )


def push_batch(
    conn: psycopg.Connection[Any], batch_id: str, device_id: str, items_json: str
) -> list[ItemResult]:
    """One batch: one round trip, one server transaction (the connection is in
    autocommit, so the single statement is its own transaction)."""
    try:
        rows = conn.execute(
            "SELECT idempotency_key, result, version, reason, server_row "
            "FROM acode_sync.push(%s, %s, %s::jsonb)",
            (batch_id, device_id, items_json),
        ).fetchall()
    except _SETUP_ERRORS as exc:
        raise _setup_problem(exc) from None
    return [
        ItemResult(key, outcome, version, reason, row)
        for key, outcome, version, reason, row in rows
    ]


def pull_page(
    conn: psycopg.Connection[Any], after: int, limit: int, device_id: str
) -> list[tuple[Any, ...]]:
    """Changes after the cursor, in seq order, each with its entity's current
    state; no payload (None) where that state is ``device_id``'s own write."""
    try:
        return conn.execute(
            "SELECT seq, idempotency_key, entity_type, entity_id, op, version, origin_device, "
            "changed_at, payload FROM acode_sync.pull(%s, %s, %s)",
            (after, limit, device_id),
        ).fetchall()
    except _SETUP_ERRORS as exc:
        raise _setup_problem(exc) from None
