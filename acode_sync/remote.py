"""Everything that talks to PostgreSQL.

Driver errors are translated here, at the boundary, with the password never
shown. Two kinds, because they call for different things:

- the link: nobody answers, the connection drops, the server is starting or
  shutting down, too many clients. :class:`ConnectionFailed` (ACODE-SYNC-001,
  exit 1): being offline; changes queue and go when it answers.
- the set-up: the server answers and refuses us (password, database, login
  role, grants, schema), or the URL itself cannot be used.
  :class:`SetupError` (exit 2): waiting will not fix it; the message says what to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from acode_sync.errors import BATCH_FAILED, ConnectionFailed, SetupError

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
    """Open a connection, or raise ConnectionFailed (the link) or SetupError (the
    server refuses us, or the URL is unusable), naming the server, never the password."""
    params = parse_url(conninfo)
    defaults: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "application_name": "acode-sync",
    }
    for key in params:
        defaults.pop(key, None)
    try:
        return psycopg.connect(conninfo, autocommit=autocommit, **defaults, **kwargs)
    except psycopg.OperationalError as exc:
        raise connect_error(conninfo, exc) from None
    except psycopg.ProgrammingError as exc:  # psycopg's own checks, e.g. connect_timeout
        raise SetupError(
            f"the remote URL cannot be used ({_without_secrets(conninfo, exc)})",
            "fix that parameter of the URL",
        ) from None


def parse_url(conninfo: str) -> dict[str, Any]:
    """The URL's parameters, or SetupError when it cannot be a PostgreSQL URL."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        raise SetupError(
            f"the remote URL is not a valid PostgreSQL URL ({_without_secrets(conninfo, exc)})",
            "write it as postgresql://ROLE@HOST:PORT/DATABASE",
        ) from None
    # libpq reads the port only when it connects, and reports a bad one as a
    # broken connection; checked here it is plainly the setting's fault.
    for port in str(params.get("port", "")).split(","):
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise SetupError(
                f"the remote URL's port {port!r} is not a TCP port",
                "give a port from 1 to 65535 (PostgreSQL's default is 5432)",
            )
    return params


def _without_secrets(conninfo: str, exc: Exception) -> str:
    """libpq's parse error, with whatever of the URL it quotes removed (it may
    quote the whole URL, password and all)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    first = re.sub(r'\s+in (URI|connection info string)?:? ".*$', "", first)
    secrets = [conninfo, *re.findall(r"://[^:/@]*:([^@/]+)@", conninfo)]
    secrets += re.findall(r"password\s*=\s*'?([^'\s]+)", conninfo)
    for secret in secrets:
        first = first.replace(secret, "***")
    return first


# psycopg gives no SQLSTATE for a failed connection attempt (``sqlstate`` is None:
# libpq keeps the server's code to itself; psycopg/psycopg#1188), so the server's
# message is what there is. These are its English texts (and libpq's); a server
# set to another lc_messages falls back to "offline", the behaviour before.
_REFUSALS: tuple[tuple[str, str, str], ...] = (
    # (pattern in libpq's message, the problem, what to do)
    (
        r'password authentication failed for user "(?P<role>[^"]*)"',  # 28P01
        "password authentication failed for role {role}",
        "fix the password (in the URL, PGPASSWORD or ~/.pgpass)",
    ),
    (
        r"no password supplied",  # libpq: the server asked for one
        "the server wants a password and none was given",
        "put it in PGPASSWORD or ~/.pgpass (or in the URL)",
    ),
    (
        r'role "(?P<role>[^"]*)" does not exist',  # 28000
        "login role {role} does not exist on the server",
        "fix the role in the URL, or have an admin create and enroll it: "
        "CREATE ROLE {role} LOGIN; GRANT acode_sync_device TO {role}",
    ),
    (
        r'role "(?P<role>[^"]*)" is not permitted to log in',  # 28000
        "role {role} may not log in",
        "have an admin run: ALTER ROLE {role} LOGIN",
    ),
    (
        r'database "(?P<database>[^"]*)" does not exist',  # 3D000
        "database {database} does not exist on the server",
        "fix the database in the URL, or have an admin create it and run "
        "'acode-sync migrate --remote' on it",
    ),
    (
        r'permission denied for database "?(?P<database>[^"\s]*)',  # 42501
        "this role may not connect to database {database}",
        "have an admin GRANT CONNECT on it to the role (or to acode_sync_device)",
    ),
    (
        r"no pg_hba\.conf entry",  # 28000
        "the server's pg_hba.conf lets no such login in from here",
        "have the server's admin allow this host, role and database",
    ),
    (
        r"(?P<method>\w+) authentication failed for user",  # 28000: peer, ident, cert...
        "the server refused the login ({method} authentication)",
        "fix the role in the URL, or have the server's admin allow it",
    ),
)


def connect_error(conninfo: str, exc: psycopg.OperationalError) -> ConnectionFailed | SetupError:
    """What a failed connection attempt means: a refusal or the link."""
    text = str(exc).strip()
    server = redact(conninfo)
    for pattern, problem, fix in _REFUSALS:
        found = re.search(pattern, text)
        if found:
            names = found.groupdict()
            return SetupError(
                f"{server} refused us: " + problem.format(**names), fix.format(**names)
            )
    # "connection failed: connection to server at "h", port p failed: <why>"
    reason = text.splitlines()[0].rsplit("failed: ", 1)[-1] if text else type(exc).__name__
    # libpq's checks of option values ("invalid integer value ... for connection
    # option", "invalid sslmode value"): the URL's fault, before any network.
    if re.search(r"\binvalid \S+ (value|number)", reason):
        return SetupError(
            f"the remote URL cannot be used ({_without_secrets(conninfo, exc)})",
            "fix that parameter of the URL",
        )
    return ConnectionFailed(f"cannot connect to {server}: {reason}")


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
_UNMIGRATED = (
    psycopg.errors.UndefinedFunction,
    psycopg.errors.UndefinedTable,
    psycopg.errors.InvalidSchemaName,
)
_SETUP_ERRORS = (*_UNMIGRATED, psycopg.errors.InsufficientPrivilege)


def _setup_problem(conn: psycopg.Connection[Any], exc: psycopg.Error) -> SetupError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    role, database = conn.info.user, conn.info.dbname
    if isinstance(exc, _UNMIGRATED):
        return SetupError(
            f"the remote is not ready for acode-sync: database {database} lacks the "
            f"acode-sync schema or a migration this version needs ({first})",
            "run 'acode-sync migrate --remote' on it with an admin role",
            code=BATCH_FAILED,
        )
    return SetupError(
        f"the remote is not ready for acode-sync: role {role} is not enrolled ({first})",
        f"have an admin run: GRANT acode_sync_device TO {role}",
        code=BATCH_FAILED,
    )


# The owner's newest change-log seq that the transaction sees (any schema).
_HEAD = "SELECT coalesce(max(seq), 0) FROM acode_sync.changes WHERE owner_id = current_user::text"


@dataclass(frozen=True)
class Pushed:
    """A batch's answers, and the owner's newest change-log seq read in the
    push's own transaction just before and just after ``push()``. The seqs
    between the two are what ``push()`` logged (owner_clock's row lock, held
    to COMMIT, orders an owner's writers), plus those of another transaction
    of the owner that committed after the first read: ``pull_past_own_push``
    tells the two apart by counting."""

    results: list[ItemResult]
    head_before: int | None = None  # None: no one transaction (a split batch)
    head_after: int | None = None

    @property
    def written(self) -> int:
        """Items the push wrote, one change-log row each: applied at a version
        (a withdrawal of what the server never had is applied at 0, unwritten)."""
        return sum(1 for r in self.results if r.outcome == "applied" and (r.version or 0) > 0)

    def span(self) -> dict[str, int] | None:
        """The parameters of ``pull_past_own_push``; None when one transaction
        did not answer the whole batch, or it wrote nothing."""
        written = self.written  # a pass over the batch's answers: once
        if self.head_before is None or self.head_after is None or not written:
            return None
        return {"before": self.head_before, "after": self.head_after, "written": written}


def push_batch(
    conn: psycopg.Connection[Any], batch_id: str, device_id: str, items_json: str
) -> Pushed:
    """One batch: one round trip, one server transaction. The connection is in
    autocommit; the three statements go pipelined before one Sync, which makes
    them one implicit transaction (an error rolls all of it back).

    The server's error may reach psycopg while a later statement is sent (it
    reads what has come in) or when the pipeline is synced. Caught inside the
    block, it leaves the block cleanly: psycopg then raises the sync's own
    error (``PipelineAborted``) instead of logging it as "error ignored",
    which its last-resort handler printed beside the one-line error."""
    first: psycopg.Error | None = None
    try:
        with conn.pipeline():
            try:
                before = conn.execute(_HEAD)
                answers = conn.execute(
                    "SELECT idempotency_key, result, version, reason, server_row "
                    "FROM acode_sync.push(%s, %s, %s::jsonb)",
                    (batch_id, device_id, items_json),
                )
                after = conn.execute(_HEAD)
            except psycopg.Error as exc:
                first = exc
    except psycopg.Error as exc:
        first = first or exc
    if first is not None:
        if isinstance(first, _SETUP_ERRORS):
            raise _setup_problem(conn, first) from None
        raise first
    results = [
        ItemResult(key, outcome, version, reason, row)
        for key, outcome, version, reason, row in answers.fetchall()
    ]
    return Pushed(results, _one(before), _one(after))


def _one(cursor: psycopg.Cursor[Any]) -> int:
    row = cursor.fetchone()
    return int(row[0]) if row else 0


def head_seq(conn: psycopg.Connection[Any]) -> int:
    """The newest seq of this owner's change log (one index probe): how far a
    pull has to go."""
    try:
        return _one(conn.execute(_HEAD))
    except _SETUP_ERRORS as exc:
        raise _setup_problem(conn, exc) from None


def pull_page(
    conn: psycopg.Connection[Any], after: int, limit: int, device_id: str | None
) -> list[tuple[Any, ...]]:
    """Changes after the cursor, in seq order, each with its entity's current
    state; no payload (None) where that state is ``device_id``'s own write."""
    return _call(
        conn,
        "SELECT seq, idempotency_key, entity_type, entity_id, op, version, origin_device, "
        "changed_at, payload FROM acode_sync.pull(%s, %s, %s)",
        (after, limit, device_id),
    )


def _call(
    conn: psycopg.Connection[Any], statement: str, params: tuple[Any, ...]
) -> list[tuple[Any, ...]]:
    """One call of a server function; a server not set up for us is a SetupError."""
    try:
        return conn.execute(statement, params).fetchall()
    except _SETUP_ERRORS as exc:
        raise _setup_problem(conn, exc) from None


def pull_head(conn: psycopg.Connection[Any]) -> int | None:
    """The owner's last seq on the server (server 0005), None when the server
    cannot tell (a schema from before 0005)."""
    try:
        row = conn.execute("SELECT acode_sync.pull_head()").fetchone()
    except psycopg.errors.UndefinedFunction:
        return None
    return int(row[0]) if row else None
