"""Benchmark: the upload path (``Uploader.push``), beside a raw COPY in the same run.

Everything runs against a scratch database (``acode_bench_<pid>``) created on
the server as the admin role, migrated with ``migrate_remote`` and dropped at
the end whatever happens. The device logs in as ``acode_bench_device``, a
login role granted ``acode_sync_device`` (created if missing, left in place
like the test suite's device roles: roles are cluster-wide).

Measured:

(a) One batch: ``Uploader.push(max_batches=1)`` of a fresh batch of 50
    messages, repeated with fresh rows, p50/p99/max wall time. Beside it, in
    the same loop (order alternating), a raw ``COPY`` of the same 50 rows into
    ``bench_copy.messages``, a table ``LIKE acode_sync.messages INCLUDING ALL``
    (same columns, primary key and index; no triggers, RLS, change log or FK).
(b) Draining a backlog: one chat and N messages written locally through the
    capture triggers in one local transaction (not timed), then one
    ``Uploader.push()`` until the outbox is empty, at batch_size 50 (1 MiB
    byte limit, the default) and at batch_size 1,000 (16 MiB, so no batch is
    cut by bytes), each on an emptied server. Beside it, a raw COPY of the
    same N rows (psycopg ``cursor.copy`` + ``write_row``, rows already in
    memory, one statement, as the device role) before the first drain of a
    size and after each; the median is the baseline. Beside both, the floor:
    the same N rows INSERTed straight into ``acode_sync.messages``, 1,000 per
    statement and transaction, as the device role (keys, foreign key, RLS and
    the change-log trigger; no push logic, no local work), sampled before each
    drain: what no upload of these rows can beat, and so what the COPY ratio
    of a drain can at most approach.
(c) Peak RSS: each drain runs in its own child process (``subprocess``), which
    reports its peak RSS (``VmHWM``; ``ru_maxrss`` would carry the parent's
    peak across exec) once ready (imports done, connections open) and after
    the drain, for a backlog of N/10 and of N.

After every drain: the server holds exactly N messages, 1 chat, N + 1
changes and no conflicts; the local outbox is N + 1 rows, all Synced; every
local entity is Synced at version 1. Anything else raises.

Server-side time per drain comes from ``pg_stat_user_functions``
(``track_functions = 'pl'`` is set on the scratch database): the total time
spent in ``acode_sync.push()`` and in the change-log trigger function.

``--profile`` adds a cProfile run of each drain (in its own child process,
outside the measured table) and a breakdown of the client's time.

Run::

    python benchmarks/push.py [--rows N] [--repeats R] [--profile] [--out FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import math
import os
import platform
import pstats
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from common import code_version, emit, load_average, percentile, profile_lines, progress, verdict
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from ulid import ULID

from acode_sync import upload
from acode_sync.config import SyncConfig, parse_config
from acode_sync.engine import connect_remote
from acode_sync.migrations import migrate_local, migrate_remote
from acode_sync.remote import ItemResult, push_batch
from acode_sync.store import new_chat
from acode_sync.upload import PushReport, Uploader
from acode_sync.workspace import connect, write

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEVICE_ROLE = "acode_bench_device"
DEVICE_ID = "bench-device"

DEFAULT_ROWS = 100_000
DEFAULT_REPEATS = 30
DEFAULT_WARMUP = 3
LATENCY_BATCH = 50
DRAIN_BATCHES = (50, 1000)
FLOOR_BATCH = 1000  # rows per statement of the floor (see floor_rows)
BYTES_MAX = {50: 1_048_576, 1000: 16 * 1_048_576}

# Targets the results are compared against.
SPEC_TYPICAL_MS = 2000.0  # specification: one batch of 50, typical
SPEC_MAX_MS = 5000.0  # specification: one batch of 50, max
TARGET_BATCH_MS = 50.0  # ours: one batch of 50 (held against p99)
TARGET_ROWS_PER_S_50 = 5000.0  # ours: drain rate at batch_size 50
TARGET_COPY_RATIO_1000 = 0.5  # ours: drain rate at batch_size 1000 / COPY rate
TARGET_RSS_MB = 150.0  # ours: peak RSS of the draining process

INSERT_MESSAGE = "INSERT INTO messages (id, chat_id, role, content) VALUES (?, ?, ?, ?)"
# A chat message of ordinary length (about 300 bytes).
CONTENT = (
    "Please move the token refresh out of the request handler into a background "
    "task, keep a five minute safety margin before expiry, and log (without the "
    "token itself) whenever a refresh fails. The existing tests for the handler "
    "should keep passing; add one for the margin. A short note in the changelog too."
)
COPY_COLUMNS = (
    "owner_id",
    "id",
    "chat_id",
    "role",
    "content",
    "privacy",
    "created_at",
    "updated_at",
    "deleted_at",
    "version",
    "changed_at",
    "origin_device",
    "idempotency_key",
    "batch_id",
)
COPY_TABLE = "bench_copy.messages"
CLIENT_PHASES = (
    # (label, function name as cProfile records it, file suffix)
    ("claim due rows (SELECT, OutboxRow)", "claim_due", "outbox.py"),
    ("privacy re-check", "_prepare", "upload.py"),
    ("JSON of the batch", "_wire_items", "upload.py"),
    ("push_batch: round trip + server", "push_batch", "remote.py"),
    ("mark results (local transaction)", "_mark_results", "upload.py"),
    ("coalesce + take_batch", "coalesce", "batching.py"),
)


# ---------------------------------------------------------------- results ----


@dataclass(frozen=True)
class Latency:
    """Wall time of one side, in milliseconds."""

    n: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, samples_s: Sequence[float]) -> Latency:
        if not samples_s:
            raise ValueError("no samples")
        ordered = sorted(samples_s)
        return cls(
            n=len(ordered),
            p50_ms=percentile(ordered, 50) * 1e3,
            p99_ms=percentile(ordered, 99) * 1e3,
            max_ms=ordered[-1] * 1e3,
        )


@dataclass(frozen=True)
class BatchResult:
    batch: int
    ours: Latency
    copy: Latency
    server_before: int  # messages of this owner already on the server at the start

    @property
    def ratio_p50(self) -> float:
        return self.ours.p50_ms / self.copy.p50_ms


@dataclass(frozen=True)
class DrainResult:
    rows: int  # messages in the backlog (the outbox holds rows + 1: the chat)
    batch_size: int
    batch_bytes_max: int
    seconds: float
    batches: int
    applied: int
    rss_ready_kb: int  # peak RSS after imports and connections, before draining
    rss_peak_kb: int  # peak RSS after the drain
    server_push_ms: float | None  # total time inside acode_sync.push()
    server_log_ms: float | None  # of which in the change-log trigger function
    server_push_calls: int | None
    round_trips_s: float  # client-side wall time inside push_batch (network + server)
    first_batches_ms: float  # mean round trip of the first tenth of the batches
    last_batches_ms: float  # ... and of the last tenth (the final partial batch left out)
    copy_seconds: tuple[float, ...]  # the raw COPY samples of this backlog size
    floor_seconds: tuple[float, ...]  # the bare-INSERT floor samples (see timed_floor)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    @property
    def copy_median_s(self) -> float:
        return statistics.median(self.copy_seconds)

    @property
    def copy_rows_per_s(self) -> float:
        return self.rows / self.copy_median_s

    @property
    def copy_ratio(self) -> float:
        """Our rate as a fraction of the raw COPY rate."""
        return self.rows_per_s / self.copy_rows_per_s

    @property
    def floor_median_s(self) -> float:
        return statistics.median(self.floor_seconds)

    @property
    def floor_copy_ratio(self) -> float:
        """The floor's rate as a fraction of the raw COPY rate."""
        return self.copy_median_s / self.floor_median_s

    @property
    def floor_ratio(self) -> float:
        """Our rate as a fraction of the floor's."""
        return self.floor_median_s / self.seconds

    @property
    def local_s(self) -> float:
        """Drain time outside the round trips: claiming, JSON, marking (SQLite + Python)."""
        return self.seconds - self.round_trips_s


@dataclass(frozen=True)
class ProfileEntry:
    name: str
    calls: int
    tottime_s: float
    cumtime_s: float


@dataclass(frozen=True)
class DrainProfile:
    rows: int
    batch_size: int
    wall_s: float  # under the profiler, so slower than the measured drain
    phases: list[tuple[str, float]]  # (label, cumulative seconds)
    top: list[ProfileEntry]


@dataclass(frozen=True)
class Machine:
    date: str
    nproc: int
    python: str
    postgres: str
    sqlite: str
    psycopg: str
    platform: str
    load_at_start: str
    server_settings: str  # the settings that shape the numbers
    code: str  # the commit measured, and whether acode_sync/ or sql/ differ from it


@dataclass
class PushBenchResult:
    machine: Machine
    rows: int
    small_rows: int
    repeats: int
    warmup: int
    database: str
    profile_rows: int = 0
    batches: list[BatchResult] = field(default_factory=list)
    drains: list[DrainResult] = field(default_factory=list)
    profiles: list[DrainProfile] = field(default_factory=list)
    elapsed_s: float = 0.0
    load_at_end: str = ""


# ---------------------------------------------------------------- helpers ----


def peak_rss_kb() -> int:
    """Peak resident set size of this process so far, in KiB.

    ``VmHWM`` of /proc/self/status where there is one: ``ru_maxrss`` survives
    exec on Linux, so a child started by a parent that holds a lot of memory
    (here: the 100k COPY rows) would report the parent's peak, not its own.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def with_params(url: str, **changes: Any) -> str:
    params = conninfo_to_dict(url)
    params.update(changes)
    if "user" in changes:
        params.pop("password", None)
    return make_conninfo("", **params)


def sync_config(batch_size: int, batch_bytes_max: int) -> SyncConfig:
    return parse_config(
        {
            "sync": {
                "device_id": DEVICE_ID,
                "upload": {"batch_size": batch_size, "batch_bytes_max": batch_bytes_max},
            }
        },
        "benchmarks/push.py",
    )


# ---------------------------------------------------------------- server ----


@contextmanager
def scratch_database(admin_url: str, name: str) -> Iterator[str]:
    """A new database migrated with the server schema; dropped on the way out."""
    admin = psycopg.connect(admin_url, autocommit=True)
    try:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            admin.execute(
                sql.SQL("ALTER DATABASE {} SET track_functions = 'pl'").format(sql.Identifier(name))
            )
            url = with_params(admin_url, dbname=name)
            migrate_remote(url)
            ensure_device_role(admin, DEVICE_ROLE)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CREATE SCHEMA bench_copy")
                conn.execute(f"CREATE TABLE {COPY_TABLE} (LIKE acode_sync.messages INCLUDING ALL)")
                conn.execute(
                    sql.SQL("GRANT USAGE ON SCHEMA bench_copy TO {}").format(
                        sql.Identifier(DEVICE_ROLE)
                    )
                )
                conn.execute(
                    sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(
                        sql.SQL(COPY_TABLE), sql.Identifier(DEVICE_ROLE)
                    )
                )
            yield url
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    finally:
        admin.close()


def ensure_device_role(admin: psycopg.Connection[Any], role: str) -> None:
    exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if not exists:
        # A concurrent run may create it meanwhile.
        with suppress(psycopg.errors.DuplicateObject):
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    admin.execute(sql.SQL("GRANT acode_sync_device TO {}").format(sql.Identifier(role)))


def server_version(admin_url: str) -> str:
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


SETTINGS = ("autovacuum", "synchronous_commit", "fsync", "shared_buffers", "jit")


def server_settings(admin_url: str) -> str:
    with psycopg.connect(admin_url) as conn:
        found: dict[str, str] = dict(
            conn.execute(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
                (list(SETTINGS),),
            ).fetchall()
        )
    return ", ".join(f"{name}={found.get(name, '?')}" for name in SETTINGS)


def reset_server(db_url: str) -> None:
    """Empty the entity tables, the log and the baseline table (a fresh server, as
    after the migrations); reset the statistics."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE acode_sync.messages, acode_sync.chats, acode_sync.changes, "
            f"acode_sync.conflicts, acode_sync.owner_clock, {COPY_TABLE}"
        )
        conn.execute("CHECKPOINT")  # no checkpoint of an earlier phase lands in this one
        conn.execute("SELECT pg_stat_reset()")


def function_stats(db_url: str, want_calls: int) -> tuple[float | None, float | None, int | None]:
    """(ms in push(), ms in log_changes(), push() calls); stats arrive shortly after
    the device's backend exits, so wait for them a little."""
    deadline = time.monotonic() + 5.0
    found: dict[str, tuple[int, float]] = {}
    with psycopg.connect(db_url, autocommit=True) as conn:
        while True:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            found = {
                name: (int(calls), float(total))
                for name, calls, total in conn.execute(
                    "SELECT funcname, calls, total_time FROM pg_stat_user_functions "
                    "WHERE schemaname = 'acode_sync'"
                )
            }
            calls = found.get("push", (0, 0.0))[0]
            if calls >= want_calls or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    if "push" not in found:
        return None, None, None
    log_ms = found["log_changes"][1] if "log_changes" in found else None
    return found["push"][1], log_ms, found["push"][0]


def server_counts(db_url: str) -> dict[str, int]:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM acode_sync.messages), "
            "(SELECT count(*) FROM acode_sync.chats), "
            "(SELECT count(*) FROM acode_sync.changes), "
            "(SELECT count(DISTINCT idempotency_key) FROM acode_sync.changes), "
            "(SELECT count(*) FROM acode_sync.conflicts), "
            f"(SELECT count(*) FROM {COPY_TABLE})"
        ).fetchone()
    assert row is not None
    keys = ("messages", "chats", "changes", "distinct_keys", "conflicts", "copied")
    return dict(zip(keys, (int(v) for v in row), strict=True))


def copy_rows(conn: psycopg.Connection[Any], rows: Sequence[tuple[Any, ...]]) -> float:
    """One COPY of ``rows`` into the baseline table (its own transaction); seconds."""
    statement = f"COPY {COPY_TABLE} ({', '.join(COPY_COLUMNS)}) FROM STDIN"
    with conn.cursor() as cur:
        start = time.perf_counter()
        with cur.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
        return time.perf_counter() - start


FLOOR_INSERT = (
    "INSERT INTO acode_sync.messages (id, chat_id, role, content, privacy, created_at, "
    "updated_at, deleted_at, version, changed_at, origin_device, idempotency_key, batch_id) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
    "%s::timestamptz[], %s::timestamptz[], %s::timestamptz[], %s::bigint[], "
    "%s::timestamptz[], %s::text[], %s::text[], %s::text[])"
)


def floor_rows(conn: psycopg.Connection[Any], rows: Sequence[tuple[Any, ...]]) -> float:
    """The same rows written straight into ``acode_sync.messages``, 1,000 per
    statement and transaction, through everything the table itself costs: its
    keys and index, the foreign key, row-level security and the change-log
    trigger. No validation, idempotency or conflict check, no local work: what
    no upload of these rows at this batch size can beat. Seconds (the
    connection is in autocommit)."""
    chat_id = rows[0][2]
    conn.execute(
        "INSERT INTO acode_sync.chats (id, title, changed_at, origin_device, idempotency_key) "
        "VALUES (%s, 'floor', now(), %s, %s)",
        (chat_id, DEVICE_ID, f"floor-chat-{chat_id}"),
    )
    start = time.perf_counter()
    for first in range(0, len(rows), FLOOR_BATCH):
        part = rows[first : first + FLOOR_BATCH]
        batch_id = f"floor-{first}"
        # COPY_COLUMNS order, owner_id left to its default (current_user).
        columns = [list(column) for column in zip(*(row[1:13] for row in part), strict=True)]
        conn.execute(FLOOR_INSERT, (*columns, [batch_id] * len(part)))
    return time.perf_counter() - start


# ----------------------------------------------------------------- local ----


def open_local(path: Path) -> tuple[sqlite3.Connection, str]:
    """A fresh migrated workspace database with one chat."""
    if path.exists():
        raise FileExistsError(f"{path}: the benchmark wants a fresh database file")
    conn = connect(path)
    migrate_local(conn)
    return conn, new_chat(conn, "benchmark backlog")


def write_messages(conn: sqlite3.Connection, chat_id: str, count: int) -> list[str]:
    """``count`` messages in one local transaction, through the capture triggers."""
    ids = [str(ULID()) for _ in range(count)]
    with write(conn):
        conn.executemany(
            INSERT_MESSAGE,
            (
                (message_id, chat_id, "user" if i % 2 == 0 else "assistant", CONTENT)
                for i, message_id in enumerate(ids)
            ),
        )
    return ids


def copy_source(
    conn: sqlite3.Connection, ids: Sequence[str] | None = None
) -> list[tuple[Any, ...]]:
    """The local messages (all, or ``ids``) as COPY rows of the baseline table."""
    query = (
        "SELECT m.id, m.chat_id, m.role, m.content, m.privacy, m.created_at, m.updated_at, "
        "m.deleted_at, o.idempotency_key, o.changed_at FROM messages m "
        "JOIN sync_outbox o ON o.entity_type = 'message' AND o.entity_id = m.id"
    )
    if ids is None:
        found = conn.execute(query + " ORDER BY o.seq").fetchall()
    else:
        found = []
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ", ".join("?" * len(chunk))
            found += conn.execute(query + f" WHERE m.id IN ({marks})", chunk).fetchall()
    # COPY_COLUMNS order: owner, entity columns, version 1, changed_at, device, key, batch.
    return [(DEVICE_ROLE, *r[:8], 1, r[9], DEVICE_ID, r[8], None) for r in found]


def check_local_all_synced(conn: sqlite3.Connection, rows: int) -> None:
    statuses = dict(conn.execute("SELECT status, count(*) FROM sync_outbox GROUP BY status"))
    if statuses != {"Synced": rows + 1}:
        raise AssertionError(f"local outbox: {statuses}, want {{'Synced': {rows + 1}}}")
    entities = conn.execute(
        "SELECT sync_status, version, count(*) FROM "
        "(SELECT sync_status, version FROM chats UNION ALL SELECT sync_status, version "
        "FROM messages) GROUP BY sync_status, version"
    ).fetchall()
    if [tuple(e) for e in entities] != [("Synced", 1, rows + 1)]:
        raise AssertionError(f"local entities: {[tuple(e) for e in entities]}, want all Synced v1")


def check_report(report: PushReport, want_applied: int, what: str) -> None:
    problems = (report.rejected, report.failed, report.conflicts, report.withheld)
    if report.applied != want_applied or report.duplicates or any(problems) or report.errors:
        raise AssertionError(f"{what}: unexpected push report {report}")


# ------------------------------------------------------------ (a) one batch ----


def push_one_batch(uploader: Uploader, remote: psycopg.Connection[Any], index: int) -> float:
    """Seconds for ``push(max_batches=1)`` of the 50 rows just written."""
    start = time.perf_counter()
    report = uploader.push(remote, max_batches=1)
    elapsed = time.perf_counter() - start
    check_report(report, LATENCY_BATCH, f"batch {index}")
    if report.batches != 1:
        raise AssertionError(f"batch {index}: {report.batches} batches, want 1")
    return elapsed


def run_batch_latency(
    folder: Path, db_url: str, *, repeats: int, warmup: int, fresh: bool, quiet: bool
) -> BatchResult:
    """``push(max_batches=1)`` of 50 fresh messages vs a COPY of the same rows.

    ``fresh``: on an emptied server; otherwise on the server as the previous
    phase left it (a drained backlog of this owner, and as many rows in the
    baseline table), with a new chat."""
    device_url = with_params(db_url, user=DEVICE_ROLE)
    if fresh:
        reset_server(db_url)
    before = server_counts(db_url)
    local, chat_id = open_local(folder / f"batch-{'fresh' if fresh else 'loaded'}.db")
    uploader = Uploader(
        local,
        sync_config(LATENCY_BATCH, BYTES_MAX[LATENCY_BATCH]),
        DEVICE_ID,
        conflicts_dir=folder / "conflicts",
    )
    ours: list[float] = []
    copies: list[float] = []
    try:
        with connect_remote(device_url) as remote, connect_remote(device_url) as copy_conn:
            check_report(uploader.push(remote), 1, "the chat")
            for index in range(warmup + repeats):
                ids = write_messages(local, chat_id, LATENCY_BATCH)
                rows = copy_source(local, ids)
                if index % 2 == 0:
                    ours_s = push_one_batch(uploader, remote, index)
                    copy_s = copy_rows(copy_conn, rows)
                else:
                    copy_s = copy_rows(copy_conn, rows)
                    ours_s = push_one_batch(uploader, remote, index)
                if index >= warmup:
                    ours.append(ours_s)
                    copies.append(copy_s)
        total = (warmup + repeats) * LATENCY_BATCH
        check_local_all_synced(local, total)
    finally:
        local.close()
    after = server_counts(db_url)
    grown = {key: after[key] - before[key] for key in after}
    want = {
        "messages": total,
        "chats": 1,
        "changes": total + 1,
        "distinct_keys": total + 1,
        "conflicts": 0,
        "copied": total,
    }
    if grown != want:
        raise AssertionError(f"batch latency: the server grew by {grown}, want {want}")
    progress(
        f"  one batch of {LATENCY_BATCH}, server holding {before['messages']:,} messages: "
        f"{repeats} repeats done",
        quiet,
    )
    return BatchResult(
        batch=LATENCY_BATCH,
        ours=Latency.of(ours),
        copy=Latency.of(copies),
        server_before=before["messages"],
    )


# ---------------------------------------------------------- (b, c) draining ----


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one drain in a fresh Python process; its JSON answer."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child-drain", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"drain child failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def child_drain(spec: dict[str, Any]) -> dict[str, Any]:
    """In the child: open everything, note the RSS, drain, note the RSS again.

    Every round trip (``push_batch``) is timed on the way, to split the drain
    into server + network and local work, and to see whether a batch costs more
    as the server's tables grow."""
    trips: list[float] = []
    send = push_batch

    def timed_push_batch(
        conn: psycopg.Connection[Any], batch_id: str, device_id: str, items_json: str
    ) -> list[ItemResult]:
        start = time.perf_counter()
        try:
            return send(conn, batch_id, device_id, items_json)
        finally:
            trips.append(time.perf_counter() - start)

    # The uploader calls push_batch through its module's namespace.
    upload.push_batch = timed_push_batch  # type: ignore[attr-defined]
    conn = connect(spec["db"])
    uploader = Uploader(
        conn,
        sync_config(spec["batch_size"], spec["batch_bytes_max"]),
        DEVICE_ID,
        conflicts_dir=Path(spec["db"]).parent / "conflicts",
    )
    remote = connect_remote(spec["url"])
    try:
        remote.execute("SELECT 1")
        conn.execute("SELECT 1 FROM sync_outbox LIMIT 1").fetchone()
        rss_ready = peak_rss_kb()
        profiler = cProfile.Profile() if spec.get("profile") else None
        start = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        report = uploader.push(remote)
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - start
        rss_peak = peak_rss_kb()
        if profiler is not None:
            profiler.dump_stats(spec["profile"])
    finally:
        remote.close()
        conn.close()
    full = trips[:-1] if len(trips) > 1 else trips
    tenth = max(1, len(full) // 10)
    return {
        "seconds": seconds,
        "rss_ready_kb": rss_ready,
        "rss_peak_kb": rss_peak,
        "report": asdict(report),
        "round_trips_s": sum(trips),
        "first_batches_ms": statistics.fmean(full[:tenth]) * 1e3 if full else 0.0,
        "last_batches_ms": statistics.fmean(full[-tenth:]) * 1e3 if full else 0.0,
    }


def prepare_backlog(path: Path, rows: int) -> list[tuple[Any, ...]]:
    """A fresh local database with one chat and ``rows`` messages pending; the
    same rows as COPY rows for the baseline."""
    conn, chat_id = open_local(path)
    try:
        write_messages(conn, chat_id, rows)
        pending = conn.execute(
            "SELECT count(*) FROM sync_outbox WHERE status = 'Pending'"
        ).fetchone()[0]
        if pending != rows + 1:
            raise AssertionError(f"{path}: {pending} pending outbox rows, want {rows + 1}")
        source = copy_source(conn)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return source


def timed_copy(db_url: str, rows: Sequence[tuple[Any, ...]]) -> float:
    """A raw COPY of ``rows`` into the emptied baseline table, as the device role."""
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(f"TRUNCATE {COPY_TABLE}")
        admin.execute("CHECKPOINT")
    with connect_remote(with_params(db_url, user=DEVICE_ROLE)) as conn:
        conn.execute("SELECT 1")
        seconds = copy_rows(conn, rows)
        got = conn.execute(f"SELECT count(*) FROM {COPY_TABLE}").fetchone()
    if not got or got[0] != len(rows):
        raise AssertionError(f"COPY baseline: {got} rows stored, want {len(rows)}")
    return seconds


def timed_floor(db_url: str, rows: Sequence[tuple[Any, ...]]) -> float:
    """The floor (:func:`floor_rows`) on an emptied server, checked, then emptied again."""
    reset_server(db_url)
    with connect_remote(with_params(db_url, user=DEVICE_ROLE)) as conn:
        seconds = floor_rows(conn, rows)
    counts = server_counts(db_url)
    want = {"messages": len(rows), "chats": 1, "changes": len(rows) + 1, "conflicts": 0}
    if {k: counts[k] for k in want} != want or counts["distinct_keys"] != len(rows) + 1:
        raise AssertionError(f"floor of {len(rows)}: server has {counts}, want {want}")
    reset_server(db_url)
    return seconds


def run_drain(
    folder: Path,
    db_url: str,
    rows: int,
    batch_size: int,
    *,
    profile: Path | None = None,
    copy_before: bool = False,
    copy_after: bool = False,
    floors_before: int = 0,
) -> tuple[dict[str, Any], list[float], list[float]]:
    """One drain of a fresh ``rows`` backlog against an emptied server, checked;
    with raw COPYs of the same rows just before and/or after it, and
    ``floors_before`` samples of the floor before it (not after: the drained
    backlog stays on the server for the next phase)."""
    reset_server(db_url)
    tag = f"{rows}-{batch_size}{'-profile' if profile else ''}"
    path = folder / f"drain-{tag}.db"
    source = prepare_backlog(path, rows)
    copies = []
    floors = [timed_floor(db_url, source) for _ in range(floors_before)]
    if copy_before:
        copies.append(timed_copy(db_url, source))
        reset_server(db_url)
    spec = {
        "db": str(path),
        "url": with_params(db_url, user=DEVICE_ROLE),
        "batch_size": batch_size,
        "batch_bytes_max": BYTES_MAX[batch_size],
        "profile": str(profile) if profile else None,
    }
    answer = run_child(spec)
    report = PushReport(**answer["report"])
    check_report(report, rows + 1, f"drain of {rows} at batch_size {batch_size}")
    want_batches = math.ceil((rows + 1) / batch_size)
    if report.batches != want_batches:
        raise AssertionError(
            f"drain of {rows} at {batch_size}: {report.batches} batches, want {want_batches}"
        )
    counts = server_counts(db_url)
    want = {"messages": rows, "chats": 1, "changes": rows + 1, "conflicts": 0}
    if {k: counts[k] for k in want} != want or counts["distinct_keys"] != rows + 1:
        raise AssertionError(f"drain of {rows} at {batch_size}: server has {counts}, want {want}")
    local = connect(path)
    try:
        check_local_all_synced(local, rows)
    finally:
        local.close()
    path.unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    # The server's function statistics of this drain, before anything else runs.
    answer["server"] = function_stats(db_url, report.batches)
    if copy_after:
        copies.append(timed_copy(db_url, source))
    return answer, copies, floors


def run_drains(
    folder: Path, db_url: str, sizes: Sequence[int], *, quiet: bool
) -> list[DrainResult]:
    """Every size at every batch size; COPY baselines around the drains of a size."""
    results: list[DrainResult] = []
    for rows in sizes:
        pending: list[tuple[int, dict[str, Any]]] = []
        copies: list[float] = []
        floors: list[float] = []
        for index, batch_size in enumerate(DRAIN_BATCHES):
            progress(f"  drain of {rows:,} at batch_size {batch_size}", quiet)
            # COPY samples spread over the drains of this size (before the
            # first, and after each), and as many floor samples (before each).
            answer, samples, floor_samples = run_drain(
                folder,
                db_url,
                rows,
                batch_size,
                copy_before=index == 0,
                copy_after=True,
                floors_before=2 if index == 0 else 1,
            )
            pending.append((batch_size, answer))
            copies += samples
            floors += floor_samples
            progress(
                f"    {answer['seconds']:.1f} s, {rows / answer['seconds']:,.0f} rows/s; "
                f"COPY {', '.join(f'{c:.3f} s' for c in samples)}; "
                f"floor {', '.join(f'{c:.3f} s' for c in floor_samples)}",
                quiet,
            )
        for batch_size, answer in pending:
            push_ms, log_ms, calls = answer["server"]
            results.append(
                DrainResult(
                    rows=rows,
                    batch_size=batch_size,
                    batch_bytes_max=BYTES_MAX[batch_size],
                    seconds=answer["seconds"],
                    batches=answer["report"]["batches"],
                    applied=answer["report"]["applied"],
                    rss_ready_kb=answer["rss_ready_kb"],
                    rss_peak_kb=answer["rss_peak_kb"],
                    server_push_ms=push_ms,
                    server_log_ms=log_ms,
                    server_push_calls=calls,
                    round_trips_s=answer["round_trips_s"],
                    first_batches_ms=answer["first_batches_ms"],
                    last_batches_ms=answer["last_batches_ms"],
                    copy_seconds=tuple(copies),
                    floor_seconds=tuple(floors),
                )
            )
    return results


def run_profiles(
    folder: Path, db_url: str, rows: int, *, top: int, quiet: bool
) -> list[DrainProfile]:
    profiles = []
    for batch_size in DRAIN_BATCHES:
        progress(f"  profiled drain of {rows:,} at batch_size {batch_size}", quiet)
        stats_path = folder / f"drain-{rows}-{batch_size}.prof"
        answer, _, _ = run_drain(folder, db_url, rows, batch_size, profile=stats_path)
        profiles.append(summarize_profile(stats_path, rows, batch_size, answer["seconds"], top))
    return profiles


def summarize_profile(
    path: Path, rows: int, batch_size: int, wall_s: float, top: int
) -> DrainProfile:
    stats = pstats.Stats(str(path))
    table: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    table = stats.stats  # type: ignore[attr-defined]
    phases = []
    for label, func, suffix in CLIENT_PHASES:
        cum = sum(
            entry[3]
            for (file, _line, name), entry in table.items()
            if name == func and file.endswith(suffix)
        )
        phases.append((label, cum))
    entries = [
        ProfileEntry(
            name=_func_label(file, line, name),
            calls=entry[1],
            tottime_s=entry[2],
            cumtime_s=entry[3],
        )
        for (file, line, name), entry in table.items()
    ]
    entries.sort(key=lambda e: e.tottime_s, reverse=True)
    return DrainProfile(
        rows=rows, batch_size=batch_size, wall_s=wall_s, phases=phases, top=entries[:top]
    )


def _func_label(file: str, line: int, name: str) -> str:
    if file == "~":
        return name  # a built-in, e.g. <method 'execute' of 'sqlite3.Connection' objects>
    parts = Path(file).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else file
    return f"{short}:{line} {name}"


# ------------------------------------------------------------------ whole ----


def run(
    *,
    rows: int = DEFAULT_ROWS,
    repeats: int = DEFAULT_REPEATS,
    warmup: int = DEFAULT_WARMUP,
    admin_url: str = DEFAULT_ADMIN_URL,
    base_dir: Path | None = None,
    profile: bool = False,
    profile_rows: int | None = None,
    profile_top: int = 15,
    quiet: bool = True,
) -> PushBenchResult:
    """The whole benchmark on a scratch database and a temporary directory."""
    if rows < 10 or repeats < 1 or warmup < 0:
        raise ValueError("rows must be >= 10, repeats >= 1, warmup >= 0")
    started = time.perf_counter()
    small = max(1, rows // 10)
    name = f"acode_bench_{os.getpid()}"
    result = PushBenchResult(
        machine=Machine(
            date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            nproc=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0,
            python=platform.python_version(),
            postgres=server_version(admin_url),
            sqlite=sqlite3.sqlite_version,
            psycopg=psycopg.__version__,
            platform=platform.platform(),
            load_at_start=load_average(),
            server_settings=server_settings(admin_url),
            code=code_version(),
        ),
        rows=rows,
        small_rows=small,
        repeats=repeats,
        warmup=warmup,
        database=name,
        profile_rows=(profile_rows or max(10, rows // 5)) if profile else 0,
    )
    with (
        tempfile.TemporaryDirectory(prefix="acode-bench-push-", dir=base_dir) as tmp,
        scratch_database(admin_url, name) as db_url,
    ):
        folder = Path(tmp)
        progress("(a) one batch", quiet)
        result.batches.append(
            run_batch_latency(
                folder, db_url, repeats=repeats, warmup=warmup, fresh=True, quiet=quiet
            )
        )
        progress("(b, c) drains", quiet)
        result.drains = run_drains(folder, db_url, (small, rows), quiet=quiet)
        progress("(a) one batch again, on the drained server", quiet)
        result.batches.append(
            run_batch_latency(
                folder, db_url, repeats=repeats, warmup=warmup, fresh=False, quiet=quiet
            )
        )
        if profile:
            progress("profiles", quiet)
            result.profiles = run_profiles(
                folder, db_url, result.profile_rows, top=profile_top, quiet=quiet
            )
    result.elapsed_s = time.perf_counter() - started
    result.load_at_end = load_average()
    return result


# --------------------------------------------------------------- reporting ----


def _mb(kb: int) -> float:
    return kb / 1024


def to_markdown(result: PushBenchResult, command: str | None = None) -> str:
    m = result.machine
    lines = ["### Upload (push): measured", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        f"- date: {m.date}",
        f"- machine: nproc={m.nproc}, Python {m.python}, PostgreSQL {m.postgres} "
        f"(127.0.0.1, same host), SQLite {m.sqlite}, psycopg {m.psycopg}, {m.platform}",
        f"- code: {m.code}",
        f"- server settings: {m.server_settings}",
        f"- load average (1/5/15 min) at start: {m.load_at_start}; at end: {result.load_at_end}",
        f"- scratch database `{result.database}` (dropped after), device role `{DEVICE_ROLE}`",
        f"- total run time: {result.elapsed_s:.0f} s",
        "",
    ]
    if result.batches:
        lines += [
            f"**(a) One batch of {LATENCY_BATCH} messages**: `Uploader.push(max_batches=1)` vs "
            f"a raw COPY of the same rows, {result.repeats} repeats each after "
            f"{result.warmup} warm-up, alternating order; first on an empty server, then "
            "again after the drains, with the server holding the last drained backlog of this "
            "owner (and the baseline table as many rows). Nearest-rank p99: with fewer than "
            "100 samples it is the max. ms:",
            "",
            "| server already holds | push p50 | push p99 | push max | COPY p50 | COPY p99 "
            "| COPY max | push / COPY (p50) |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for b in result.batches:
            lines.append(
                f"| {b.server_before:,} messages | {b.ours.p50_ms:.1f} | {b.ours.p99_ms:.1f} "
                f"| {b.ours.max_ms:.1f} | {b.copy.p50_ms:.1f} | {b.copy.p99_ms:.1f} "
                f"| {b.copy.max_ms:.1f} | {b.ratio_p50:.1f}x |"
            )
        lines.append("")
    if result.drains:
        lines += [
            "**(b) Draining a backlog**: one chat + N messages, one `push()` until the outbox "
            "is empty, on an emptied server; raw COPY = median of the COPY samples of the same "
            "N rows taken in this run; floor = median of the samples of the same N rows "
            f"INSERTed straight into `acode_sync.messages`, {FLOOR_BATCH:,} per statement and "
            "transaction, through its keys, foreign key, row-level security and change-log "
            "trigger, with no push logic and no local work (what no upload at that batch size "
            "can beat):",
            "",
            "| N | batch_size | batches | drain s | rows/s | COPY rows/s | ours / COPY "
            "| floor rows/s | floor / COPY | ours / floor |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for d in result.drains:
            lines.append(
                f"| {d.rows:,} | {d.batch_size:,} | {d.batches:,} | {d.seconds:.2f} "
                f"| {d.rows_per_s:,.0f} | {d.copy_rows_per_s:,.0f} | {d.copy_ratio:.3f} "
                f"| {d.rows / d.floor_median_s:,.0f} | {d.floor_copy_ratio:.3f} "
                f"| {d.floor_ratio:.3f} |"
            )
        lines.append("")
        for size in sorted({d.rows for d in result.drains}):
            first = next(d for d in result.drains if d.rows == size)
            lines.append(
                f"- COPY samples, N={size:,}: "
                + ", ".join(f"{s:.3f} s" for s in first.copy_seconds)
            )
            lines.append(
                f"- floor samples, N={size:,}: "
                + ", ".join(f"{s:.3f} s" for s in first.floor_seconds)
            )
        lines += [
            "",
            "Where the drain time goes (round trips timed in the client around `push_batch`; "
            "server time from `pg_stat_user_functions`; local = drain - round trips) and "
            "**(c) peak RSS** of the draining process (VmHWM of its own child process):",
            "",
            "| N | batch_size | round trips s | server push() s | of which change-log trigger s "
            "| local s | round trip, first 10% of batches, ms | last 10%, ms "
            "| RSS ready MB | RSS peak MB |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for d in result.drains:
            push_s = f"{d.server_push_ms / 1e3:.2f}" if d.server_push_ms is not None else "n/a"
            log_s = f"{d.server_log_ms / 1e3:.2f}" if d.server_log_ms is not None else "n/a"
            lines.append(
                f"| {d.rows:,} | {d.batch_size:,} | {d.round_trips_s:.2f} | {push_s} | {log_s} "
                f"| {d.local_s:.2f} | {d.first_batches_ms:.1f} | {d.last_batches_ms:.1f} "
                f"| {_mb(d.rss_ready_kb):.1f} | {_mb(d.rss_peak_kb):.1f} |"
            )
        lines.append("")
    lines += ["Against the targets:", ""]
    for b in result.batches:
        where = f"server holding {b.server_before:,} messages"
        lines += [
            f"- spec, one batch of 50, {where}: typical (p50) "
            f"{verdict(b.ours.p50_ms, SPEC_TYPICAL_MS, ' ms')}; max "
            f"{verdict(b.ours.max_ms, SPEC_MAX_MS, ' ms')}",
            f"- ours, one batch of 50 <= {TARGET_BATCH_MS:g} ms, {where}: p50 "
            f"{verdict(b.ours.p50_ms, TARGET_BATCH_MS, ' ms')}; p99 "
            f"{verdict(b.ours.p99_ms, TARGET_BATCH_MS, ' ms')}",
        ]
    full = [d for d in result.drains if d.rows == result.rows]
    for d in full:
        if d.batch_size == 50:
            lines.append(
                f"- ours, drain of {d.rows:,} at batch_size 50: "
                f"{verdict(d.rows_per_s, TARGET_ROWS_PER_S_50, ' rows/s', at_least=True)}"
            )
        if d.batch_size == 1000:
            lines.append(
                f"- ours, drain of {d.rows:,} at batch_size 1,000 vs raw COPY: "
                f"{verdict(d.copy_ratio, TARGET_COPY_RATIO_1000, 'x', at_least=True)}; "
                f"the floor itself reached {d.floor_copy_ratio:.2f}x of COPY in this run, "
                f"ours {d.floor_ratio:.2f}x of the floor"
            )
    if result.drains:
        peak = max(result.drains, key=lambda d: d.rss_peak_kb)
        lines.append(
            f"- ours, peak RSS <= {TARGET_RSS_MB:g} MB: "
            f"{verdict(_mb(peak.rss_peak_kb), TARGET_RSS_MB, ' MB')} "
            f"(highest: N={peak.rows:,}, batch_size {peak.batch_size})"
        )
        for batch_size in DRAIN_BATCHES:
            pair = sorted(
                (d for d in result.drains if d.batch_size == batch_size), key=lambda d: d.rows
            )
            if len(pair) == 2:
                growth = _mb(pair[1].rss_peak_kb - pair[0].rss_peak_kb)
                lines.append(
                    f"- RSS vs backlog at batch_size {batch_size}: N={pair[0].rows:,} "
                    f"{_mb(pair[0].rss_peak_kb):.1f} MB, N={pair[1].rows:,} "
                    f"{_mb(pair[1].rss_peak_kb):.1f} MB (x{pair[1].rows // pair[0].rows} "
                    f"backlog: {growth:+.1f} MB)"
                )
    for p in result.profiles:
        lines += profile_lines(
            f"**Profile** (cProfile, drain of {p.rows:,} at batch_size {p.batch_size}, "
            f"{p.wall_s:.1f} s under the profiler; cumulative time per phase):",
            p.wall_s,
            p.phases,
            p.top,
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------- cli ----


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="backlog size N")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="one-batch repeats")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="an admin (superuser)")
    parser.add_argument("--dir", type=Path, default=None, help="where the temp dir goes")
    parser.add_argument("--profile", action="store_true", help="add cProfile runs of the drains")
    parser.add_argument(
        "--profile-rows", type=int, default=None, help="backlog of the profiled drains (N/5)"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--child-drain", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_drain is not None:
        print(json.dumps(child_drain(json.loads(args.child_drain))))
        return 0
    given = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python benchmarks/push.py", *given])
    result = run(
        rows=args.rows,
        repeats=args.repeats,
        warmup=args.warmup,
        admin_url=args.admin_url,
        base_dir=args.dir,
        profile=args.profile,
        profile_rows=args.profile_rows,
        quiet=args.quiet,
    )
    report = to_markdown(result, command)
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
