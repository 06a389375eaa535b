"""Benchmark: the download path (``Puller.pull``: fetch, inbox, apply), beside a raw
SQLite insert in the same run, and the cost of conflict detection.

Everything runs against a scratch database (``acode_bench_pull_<pid>``) created
as the admin role, migrated with ``migrate_remote`` and dropped at the end
whatever happens; devices log in as ``acode_bench_device``, a login role granted
``acode_sync_device`` (both from ``benchmarks/push.py``).

Server fill (not timed in the results): a "writer" device's chat and N messages
are inserted directly into ``acode_sync.messages`` as the device role, 1,000 rows
per statement, each statement its own transaction, with the writer's device id,
an idempotency key (ULID) and a change time per row, so the change-log trigger
logs them like any push; then ``VACUUM ANALYZE`` and a ``CHECKPOINT``. (Draining
the same backlog through the Uploader gives the same log, but takes minutes on
this machine.)

Measured:

(1) Pull and apply, end to end: a fresh "reader" workspace (a new SQLite file in
    a temporary directory on the real disk, ``migrate_local``) runs one
    ``Puller.pull`` (page_size 1,000) until the log is drained. The time is split
    in the same run: ``pull_page`` (server round trip and fetch) and
    ``apply_inbox`` are timed by wrapping them (a ``perf_counter`` pair per page,
    nothing else changed); writing the inbox with the new cursor is the rest.
    The server's scan counters on ``acode_sync.changes`` (``pg_stat_user_tables``)
    are read before and after. Baseline: the same N message rows, same 10 columns,
    one ``executemany`` in one transaction into ``messages`` of a database
    migrated the same way whose triggers were dropped (a fresh file each time),
    once before and once after the pull. Afterwards: the reader holds exactly the
    N messages (every column equal to the baseline's rows) and the chat, the inbox
    is all Applied, the cursor is the server's last seq, the outbox is empty.
(2) Conflict detection at pull, as implemented in ``apply_inbox``: the open-entity
    query plus the membership test per pending row, timed on its own inside the
    transaction (a copy of those lines), for a page of 1,000 pending rows and a
    page of 1, with 0 and with 10,000 unrelated open outbox rows; and
    ``apply_inbox`` on the same pages. Then the whole resolution of a real
    conflict: a page of 200 remote updates of messages with local edits pending
    vs 200 remote updates of messages without (the remote rows are made locally:
    version 2 of pulled rows), and ``conflicts.choose_winner`` per call.
(3) Conflict detection at push, on the server: ``remote.push_batch`` of 1,000
    message updates made on the current version vs 1,000 stale ones (base version
    behind, sent as another device: a device never conflicts with itself),
    interleaved; the difference per item is the extra cost of a conflict, its
    logging in ``acode_sync.conflicts`` included.

``--profile`` adds a cProfile run of a second full pull (a fresh reader, outside
the measured table).

Run::

    python benchmarks/pull.py [--rows N] [--profile] [--out FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import logging
import math
import os
import platform
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import psycopg
from common import code_version, emit, load_average, profile_lines, progress, verdict
from outbox_write import MEMORY_FILESYSTEMS, filesystem_of
from push import (
    CONTENT,
    DEFAULT_ADMIN_URL,
    DEVICE_ROLE,
    scratch_database,
    server_settings,
    server_version,
    with_params,
)
from ulid import ULID

from acode_sync import conflicts, download
from acode_sync.clock import iso, utcnow
from acode_sync.config import SyncConfig, parse_config
from acode_sync.download import Puller, PullReport
from acode_sync.engine import connect_remote
from acode_sync.migrations import migrate_local
from acode_sync.queries import query
from acode_sync.remote import pull_page, push_batch
from acode_sync.store import new_chat
from acode_sync.workspace import connect, write

WRITER_ID = "bench-writer"
STALE_WRITER_ID = "bench-other-device"  # sends the stale batches of (3)
READER_ID = "bench-reader"

DEFAULT_ROWS = 100_000
DEFAULT_PAGE_SIZE = 1000
FILL_CHUNK = 1000
DETECT_PAGE = 1000
DETECT_OPEN = 10_000
DETECT_REPEATS = 5
DETECT_TIMINGS = 5  # timings of the detection step per page (it only reads)
SINGLE_REPEATS = 20
RESOLVE_ITEMS = 200
WINNER_CALLS = 20_000
WINNER_RUNS = 5
PUSH_BATCH = 1000
PUSH_REPEATS = 5

# Targets the results are compared against.
TARGET_PULL_ROWS_PER_S = 20_000.0  # ours: pull + apply
SPEC_DETECT_TYPICAL_MS = 1.0  # specification: conflict detection per item, typical
SPEC_DETECT_MAX_MS = 5.0  # specification: conflict detection per item, max
TARGET_DETECT_MS = 0.05  # ours: conflict detection per item

MESSAGE_COLUMNS = (
    "id, chat_id, role, content, privacy, version, sync_status, created_at, updated_at, deleted_at"
)
BASELINE_INSERT = f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
# The Puller's own statement for a page (download.py), to fill inboxes by hand.
INBOX_INSERT = (
    "INSERT OR IGNORE INTO sync_inbox (seq, idempotency_key, entity_type, entity_id, op, "
    "version, origin_device, changed_at, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SERVER_FILL = (
    "INSERT INTO acode_sync.messages (id, chat_id, role, content, privacy, created_at, "
    "updated_at, version, changed_at, origin_device, idempotency_key, batch_id) "
    "SELECT u.id, %s, u.role, u.content, 'FULL', u.t::timestamptz, u.t::timestamptz, 1, "
    "u.t::timestamptz, %s, u.key, %s "
    "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[]) "
    "AS u(id, role, content, t, key)"
)
PULL_PHASES = (
    # (label, function name as cProfile records it, file suffix)
    ("pull_page: server round trip + fetch", "pull_page", "remote.py"),
    ("apply_inbox (guarded apply)", "apply_inbox", "download.py"),
)

Row = tuple[Any, ...]


# ---------------------------------------------------------------- results ----


@dataclass(frozen=True)
class Fill:
    """What the writer put on the server (times are the local format: UTC, ms, Z)."""

    chat: Row  # the local chats row: id, title, privacy, version, status, created, updated, deleted
    messages: list[Row]  # local messages rows, MESSAGE_COLUMNS order
    seconds: float
    last_seq: int


@dataclass(frozen=True)
class ScanStats:
    """Deltas of pg_stat_user_tables for acode_sync.changes over one pull."""

    seq_scan: int
    seq_tup_read: int
    idx_scan: int


@dataclass(frozen=True)
class PullResult:
    rows: int  # messages pulled (the log also carries their chat)
    changes: int  # changes received
    page_size: int
    pages: int
    seconds: float
    fetch_s: float  # inside pull_page
    apply_s: float  # inside apply_inbox
    fetch_page_ms: tuple[float, ...]  # every pull_page call, in order
    baseline_s: tuple[float, ...]  # raw insert of the same rows: before, after
    scans: ScanStats | None
    # correctness, as found after the pull
    local_messages: int
    local_chats: int
    inbox: dict[str, int]
    cursor: int
    last_seq: int
    outbox_rows: int
    rows_equal: bool

    @property
    def inbox_s(self) -> float:
        """Writing the page and the cursor to the inbox (and reading the cursor)."""
        return self.seconds - self.fetch_s - self.apply_s

    @property
    def rows_per_s(self) -> float:
        return self.changes / self.seconds

    @property
    def baseline_median_s(self) -> float:
        return statistics.median(self.baseline_s)

    @property
    def baseline_rows_per_s(self) -> float:
        return self.rows / self.baseline_median_s

    @property
    def ratio(self) -> float:
        """Pull time per change over baseline time per row."""
        return (self.seconds / self.changes) / (self.baseline_median_s / self.rows)


@dataclass(frozen=True)
class DetectResult:
    page: int  # pending inbox rows
    open_rows: int  # open local outbox rows (none of them for these entities)
    detect_ns: tuple[int, ...]  # the detection step: DETECT_TIMINGS samples per page
    apply_ns: tuple[int, ...]  # apply_inbox, one per page

    @property
    def detect_us_per_item(self) -> float:
        return statistics.median(self.detect_ns) / 1e3 / self.page

    @property
    def detect_max_us_per_item(self) -> float:
        return max(self.detect_ns) / 1e3 / self.page

    @property
    def apply_us_per_item(self) -> float:
        return statistics.median(self.apply_ns) / 1e3 / self.page


@dataclass(frozen=True)
class ResolveResult:
    items: int
    clean_s: float  # apply_inbox: remote updates, no local edits
    conflict_s: float  # apply_inbox: remote updates of locally edited messages
    conflicts: int
    local_wins: int
    remote_wins: int
    files: int  # preserved losers written to the conflicts directory

    @property
    def extra_us_per_item(self) -> float:
        return (self.conflict_s - self.clean_s) / self.items * 1e6


@dataclass(frozen=True)
class WinnerResult:
    calls: int
    run_s: tuple[float, ...]

    @property
    def us_per_call(self) -> float:
        return statistics.median(self.run_s) / self.calls * 1e6


@dataclass(frozen=True)
class PushCheckResult:
    batch: int
    applied_s: tuple[float, ...]
    stale_s: tuple[float, ...]
    conflicts_logged: int

    @property
    def applied_ms(self) -> float:
        return statistics.median(self.applied_s) * 1e3

    @property
    def stale_ms(self) -> float:
        return statistics.median(self.stale_s) * 1e3

    @property
    def extra_us_per_item(self) -> float:
        return (self.stale_ms - self.applied_ms) / self.batch * 1e3

    @property
    def stale_us_per_item(self) -> float:
        return self.stale_ms / self.batch * 1e3


@dataclass(frozen=True)
class ProfileEntry:
    name: str
    calls: int
    tottime_s: float
    cumtime_s: float


@dataclass(frozen=True)
class PullProfile:
    wall_s: float  # under the profiler
    phases: list[tuple[str, float]]
    top: list[ProfileEntry]


@dataclass(frozen=True)
class Machine:
    date: str
    nproc: int
    python: str
    postgres: str
    postgres_settings: str
    sqlite: str
    psycopg: str
    platform: str
    db_dir: str
    filesystem: str
    load_at_start: str
    code: str  # the commit and the shipped SQL measured (the tree moves under us)


@dataclass
class PullBenchResult:
    machine: Machine
    rows: int
    database: str
    fill_s: float = 0.0
    pull: PullResult | None = None
    detection: list[DetectResult] = field(default_factory=list)
    resolve: ResolveResult | None = None
    winner: WinnerResult | None = None
    push_check: PushCheckResult | None = None
    profile: PullProfile | None = None
    elapsed_s: float = 0.0
    load_at_end: str = ""


# ---------------------------------------------------------------- helpers ----


def reader_config(page_size: int) -> SyncConfig:
    return parse_config(
        {"sync": {"device_id": READER_ID, "download": {"page_size": page_size}}},
        "benchmarks/pull.py",
    )


def fresh_local(path: Path) -> sqlite3.Connection:
    """A new workspace database on disk, migrated like any workspace."""
    if path.exists():
        raise FileExistsError(f"{path}: the benchmark wants a fresh database file")
    conn = connect(path)
    migrate_local(conn)
    return conn


def fill_inbox(conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
    with write(conn):
        conn.executemany(INBOX_INSERT, rows)


@contextmanager
def quiet_conflict_log() -> Iterator[io.StringIO]:
    """ACODE-SYNC-003 warnings go to a buffer (formatted, as a handler would),
    not to the benchmark's stderr."""
    logger = logging.getLogger("acode_sync")
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    old_propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)
        logger.propagate = old_propagate


# ------------------------------------------------------------------ server ----


def fill_server(device_url: str, rows: int) -> Fill:
    """The writer's chat and ``rows`` messages, 1,000 per statement, as the device."""
    base = utcnow() - dt.timedelta(hours=2)
    chat_time = iso(base)
    chat_id = str(ULID())
    messages: list[Row] = []
    start = time.perf_counter()
    with connect_remote(device_url) as conn:
        conn.execute(
            "INSERT INTO acode_sync.chats (id, title, privacy, created_at, updated_at, "
            "version, changed_at, origin_device, idempotency_key, batch_id) "
            "VALUES (%s, 'benchmark pull', 'FULL', %s, %s, 1, %s, %s, %s, %s)",
            (chat_id, chat_time, chat_time, chat_time, WRITER_ID, str(ULID()), str(ULID())),
        )
        for first in range(0, rows, FILL_CHUNK):
            chunk = range(first, min(rows, first + FILL_CHUNK))
            ids = [str(ULID()) for _ in chunk]
            roles = ["user" if i % 2 == 0 else "assistant" for i in chunk]
            contents = [f"{CONTENT} (#{i})" for i in chunk]
            times = [iso(base + dt.timedelta(milliseconds=i + 1)) for i in chunk]
            keys = [str(ULID()) for _ in chunk]
            conn.execute(
                SERVER_FILL,
                (chat_id, WRITER_ID, str(ULID()), ids, roles, contents, times, keys),
            )
            messages += [
                (m, chat_id, r, c, "FULL", 1, "Synced", t, t, None)
                for m, r, c, t in zip(ids, roles, contents, times, strict=True)
            ]
    seconds = time.perf_counter() - start
    chat: Row = (chat_id, "benchmark pull", "FULL", 1, "Synced", chat_time, chat_time, None)
    return Fill(chat=chat, messages=messages, seconds=seconds, last_seq=rows + 1)


def settle_server(db_url: str) -> None:
    """After the fill: VACUUM ANALYZE (what autovacuum would do soon) and CHECKPOINT."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE acode_sync.chats, acode_sync.messages, acode_sync.changes")
        conn.execute("CHECKPOINT")


def check_server(db_url: str, rows: int) -> None:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM acode_sync.messages), "
            "(SELECT count(*) FROM acode_sync.chats), "
            "(SELECT count(*) FROM acode_sync.changes), "
            "(SELECT count(DISTINCT idempotency_key) FROM acode_sync.changes), "
            "(SELECT max(seq) FROM acode_sync.changes), "
            "(SELECT count(*) FROM acode_sync.changes WHERE origin_device <> %s)",
            (WRITER_ID,),
        ).fetchone()
    want = (rows, 1, rows + 1, rows + 1, rows + 1, 0)
    if row != want:
        raise AssertionError(f"server after the fill: {row}, want {want}")


def scan_counters(db_url: str) -> tuple[int, int, int]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT seq_scan, seq_tup_read, coalesce(idx_scan, 0) FROM pg_stat_user_tables "
            "WHERE schemaname = 'acode_sync' AND relname = 'changes'"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def scan_delta(db_url: str, before: tuple[int, int, int], pages: int) -> ScanStats | None:
    """The pull's scans of the change log; the device's backend has exited, its
    statistics arrive shortly after."""
    deadline = time.monotonic() + 5.0
    while True:
        now = scan_counters(db_url)
        delta = tuple(a - b for a, b in zip(now, before, strict=True))
        if delta[0] + delta[2] >= pages:
            return ScanStats(seq_scan=delta[0], seq_tup_read=delta[1], idx_scan=delta[2])
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


# -------------------------------------------------- (1) pull and apply ----


class TimedPuller(Puller):
    """The Puller with ``apply_inbox`` timed; nothing else differs."""

    apply_s: float = 0.0

    def apply_inbox(self, report: PullReport) -> None:
        start = time.perf_counter()
        try:
            super().apply_inbox(report)
        finally:
            self.apply_s += time.perf_counter() - start


def timed_pull(
    conn: sqlite3.Connection,
    remote: psycopg.Connection[Any],
    page_size: int,
    conflicts_dir: Path,
    fetched: list[Row] | None,
) -> tuple[PullReport, float, float, list[float], float]:
    """One full ``pull``; (report, seconds, fetch s, per-page fetch ms, apply s)."""
    puller = TimedPuller(conn, reader_config(page_size), READER_ID, conflicts_dir=conflicts_dir)
    pages_ms: list[float] = []

    def timed_pull_page(
        remote: psycopg.Connection[Any], after: int, limit: int, device_id: str
    ) -> list[Row]:
        start = time.perf_counter()
        rows = pull_page(remote, after, limit, device_id)
        pages_ms.append((time.perf_counter() - start) * 1e3)
        if fetched is not None:
            fetched.extend(rows)
        return rows

    with mock.patch.object(download, "pull_page", timed_pull_page):
        start = time.perf_counter()
        report = puller.pull(remote)
        seconds = time.perf_counter() - start
    return report, seconds, sum(pages_ms) / 1e3, pages_ms, puller.apply_s


def baseline_insert(path: Path, fill: Fill) -> float:
    """The same message rows, one executemany in one transaction, no triggers."""
    conn = fresh_local(path)
    try:
        with write(conn):
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger'"
            ).fetchall():
                conn.execute(f'DROP TRIGGER "{name}"')
            conn.execute(
                "INSERT INTO chats (id, title, privacy, version, sync_status, created_at, "
                "updated_at, deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                fill.chat,
            )
        start = time.perf_counter()
        with write(conn):
            conn.executemany(BASELINE_INSERT, fill.messages)
        seconds = time.perf_counter() - start
        stored = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        outbox = conn.execute("SELECT count(*) FROM sync_outbox").fetchone()[0]
    finally:
        conn.close()
    if stored != len(fill.messages) or outbox != 0:
        raise AssertionError(f"baseline: {stored} messages, {outbox} outbox rows")
    return seconds


def run_pull(
    folder: Path, db_url: str, fill: Fill, page_size: int, fetched: list[Row], *, quiet: bool
) -> PullResult:
    device_url = with_params(db_url, user=DEVICE_ROLE)
    rows = len(fill.messages)
    baselines = [baseline_insert(folder / "baseline-before.db", fill)]
    progress(f"  baseline before: {baselines[0]:.2f} s", quiet)
    conn = fresh_local(folder / "reader.db")
    try:
        before = scan_counters(db_url)
        with connect_remote(device_url) as remote:
            report, seconds, fetch_s, pages_ms, apply_s = timed_pull(
                conn, remote, page_size, folder / "reader-conflicts", fetched
            )
        progress(f"  pull: {seconds:.2f} s ({report})", quiet)
        scans = scan_delta(db_url, before, report.pages)
        local_messages = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        local_chats = conn.execute("SELECT count(*) FROM chats").fetchone()[0]
        inbox = {
            str(status): int(count)
            for status, count in conn.execute(
                "SELECT status, count(*) FROM sync_inbox GROUP BY status"
            )
        }
        cursor = conn.execute("SELECT pull_cursor FROM sync_state").fetchone()[0]
        outbox_rows = conn.execute("SELECT count(*) FROM sync_outbox").fetchone()[0]
        stored = [
            tuple(r) for r in conn.execute(f"SELECT {MESSAGE_COLUMNS} FROM messages ORDER BY id")
        ]
        chat = conn.execute(
            "SELECT id, title, privacy, version, sync_status, created_at, updated_at, "
            "deleted_at FROM chats"
        ).fetchall()
        rows_equal = stored == sorted(fill.messages) and [tuple(c) for c in chat] == [fill.chat]
    finally:
        conn.close()
    baselines.append(baseline_insert(folder / "baseline-after.db", fill))
    progress(f"  baseline after: {baselines[1]:.2f} s", quiet)
    result = PullResult(
        rows=rows,
        changes=report.received,
        page_size=page_size,
        pages=report.pages,
        seconds=seconds,
        fetch_s=fetch_s,
        apply_s=apply_s,
        fetch_page_ms=tuple(pages_ms),
        baseline_s=tuple(baselines),
        scans=scans,
        local_messages=local_messages,
        local_chats=local_chats,
        inbox=inbox,
        cursor=cursor,
        last_seq=fill.last_seq,
        outbox_rows=outbox_rows,
        rows_equal=rows_equal,
    )
    check_pull(result, report)
    return result


def check_pull(result: PullResult, report: PullReport) -> None:
    changes = result.rows + 1
    problems = []
    if (report.received, report.applied, report.skipped, report.conflicts) != (
        changes,
        changes,
        0,
        0,
    ):
        problems.append(f"report {report}")
    if report.pages != math.ceil(changes / result.page_size):
        problems.append(f"{report.pages} pages")
    if (result.local_messages, result.local_chats) != (result.rows, 1):
        problems.append(f"{result.local_messages} messages, {result.local_chats} chats")
    if result.inbox != {"Applied": changes}:
        problems.append(f"inbox {result.inbox}")
    if result.cursor != result.last_seq:
        problems.append(f"cursor {result.cursor}, last seq {result.last_seq}")
    if result.outbox_rows != 0:
        problems.append(f"{result.outbox_rows} outbox rows (the echo guard failed)")
    if not result.rows_equal:
        problems.append("local rows differ from the writer's")
    if problems:
        raise AssertionError("pull: " + "; ".join(problems))


# ------------------------------------------------- (2) detection at pull ----


def detection_step(conn: sqlite3.Connection, device_id: str) -> tuple[int, int]:
    """Time the detection lines of ``apply_inbox`` (inside a write transaction,
    like there): (ns, rows found with open local changes)."""
    with write(conn):
        start = time.perf_counter_ns()
        # The statement apply_inbox runs, imported so the two cannot drift apart.
        found = conn.execute(query("inbox_conflicting")).fetchall()
        hits = sum(1 for row in found if row["origin_device"] != device_id)
        elapsed = time.perf_counter_ns() - start
    return elapsed, hits


def prepare_detect_db(
    path: Path, warm: Sequence[Row], open_rows: int, page_size: int
) -> tuple[sqlite3.Connection, Puller]:
    """A reader with the chat (and a first page) applied and ``open_rows`` unrelated
    open outbox rows: a local chat and its messages, captured by the triggers."""
    conn = fresh_local(path)
    puller = Puller(conn, reader_config(page_size), READER_ID, conflicts_dir=path.parent / "c")
    fill_inbox(conn, warm)
    puller.apply_inbox(PullReport())
    if open_rows:
        chat_id = new_chat(conn, "local work")
        with write(conn):
            conn.executemany(
                "INSERT INTO messages (id, chat_id, role, content) VALUES (?, ?, 'user', ?)",
                ((str(ULID()), chat_id, CONTENT) for _ in range(open_rows - 1)),
            )
    found = conn.execute(
        "SELECT count(*) FROM sync_outbox WHERE status IN ('Pending', 'Failed')"
    ).fetchone()[0]
    if found != open_rows:
        raise AssertionError(f"{path}: {found} open outbox rows, want {open_rows}")
    return conn, puller


def measure_page(
    conn: sqlite3.Connection, puller: Puller, page: Sequence[Row]
) -> tuple[list[int], int]:
    """(detection ns samples, apply_inbox ns) for one page; checks that it applied."""
    fill_inbox(conn, page)
    samples = []
    for _ in range(DETECT_TIMINGS):
        ns, hits = detection_step(conn, READER_ID)
        if hits:
            raise AssertionError(f"{hits} unexpected conflicts")
        samples.append(ns)
    report = PullReport()
    start = time.perf_counter_ns()
    puller.apply_inbox(report)
    apply_ns = time.perf_counter_ns() - start
    if (report.applied, report.conflicts) != (len(page), 0):
        raise AssertionError(f"detection page: {report}")
    return samples, apply_ns


def run_detection(
    folder: Path,
    chat: Row,
    messages: Sequence[Row],
    *,
    page: int,
    open_rows: int,
    repeats: int,
    singles: int,
    page_size: int,
) -> list[DetectResult]:
    """Pages of ``page`` and of 1 pending row, with 0 and ``open_rows`` open rows."""
    warm = [chat, *messages[:page]]
    pages = [messages[page * (r + 1) : page * (r + 2)] for r in range(repeats)]
    first_single = page * (repeats + 1)
    single_pages = [messages[first_single + j : first_single + j + 1] for j in range(singles)]
    sides = {
        k: prepare_detect_db(folder / f"detect-{k}.db", warm, k, page_size) for k in (0, open_rows)
    }
    out: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
    try:
        for size, batch in ((page, pages), (1, single_pages)):
            for index, rows in enumerate(batch):
                order = (0, open_rows) if index % 2 == 0 else (open_rows, 0)
                for k in order:
                    conn, puller = sides[k]
                    detect_ns, apply_ns = measure_page(conn, puller, rows)
                    detects, applies = out.setdefault((size, k), ([], []))
                    detects.extend(detect_ns)
                    applies.append(apply_ns)
    finally:
        for conn, _ in sides.values():
            conn.close()
    return [
        DetectResult(page=size, open_rows=k, detect_ns=tuple(d), apply_ns=tuple(a))
        for (size, k), (d, a) in sorted(out.items(), key=lambda kv: (-kv[0][0], kv[0][1]))
    ]


def remote_update(row: Row, seq: int, changed_at: str) -> Row:
    """Version 2 of a pulled message row, as the server would send it."""
    payload = json.loads(row[8])
    payload["content"] = f"{payload['content']} (edited on the writer)"
    payload["updated_at"] = changed_at
    return (seq, str(ULID()), row[2], row[3], row[4], 2, WRITER_ID, changed_at, json.dumps(payload))


def run_resolve(
    folder: Path, chat: Row, messages: Sequence[Row], *, items: int, page_size: int
) -> ResolveResult:
    """apply_inbox of ``items`` remote updates without and with local edits pending."""
    clean_rows = list(messages[:items])
    edited_rows = list(messages[items : 2 * items])
    conn = fresh_local(folder / "resolve.db")
    conflicts_dir = folder / "resolve-conflicts"
    puller = Puller(conn, reader_config(page_size), READER_ID, conflicts_dir=conflicts_dir)
    try:
        fill_inbox(conn, [chat, *clean_rows, *edited_rows])
        puller.apply_inbox(PullReport())
        with write(conn):  # local edits: captured, so these entities have open rows
            conn.executemany(
                "UPDATE messages SET content = content || ' (edited on the reader)' WHERE id = ?",
                ((row[3],) for row in edited_rows),
            )
        later = iso(utcnow() + dt.timedelta(milliseconds=1))
        seq = 10**9
        clean = [remote_update(row, seq + i, later) for i, row in enumerate(clean_rows)]
        # Alternately older (the local edit wins) and newer (the remote wins).
        edited = [
            remote_update(row, seq + items + i, later if i % 2 else "2000-01-01T00:00:00.000Z")
            for i, row in enumerate(edited_rows)
        ]
        with quiet_conflict_log():
            fill_inbox(conn, clean)
            report = PullReport()
            start = time.perf_counter()
            puller.apply_inbox(report)
            clean_s = time.perf_counter() - start
            if (report.applied, report.conflicts) != (items, 0):
                raise AssertionError(f"resolve, clean page: {report}")
            fill_inbox(conn, edited)
            report = PullReport()
            start = time.perf_counter()
            puller.apply_inbox(report)
            conflict_s = time.perf_counter() - start
        winners = dict(conn.execute("SELECT winner, count(*) FROM sync_conflicts GROUP BY winner"))
    finally:
        conn.close()
    files = len(list(conflicts_dir.iterdir())) if conflicts_dir.exists() else 0
    if report.conflicts != items or files != items:
        raise AssertionError(f"resolve: {report}, {files} files, want {items} conflicts")
    return ResolveResult(
        items=items,
        clean_s=clean_s,
        conflict_s=conflict_s,
        conflicts=report.conflicts,
        local_wins=int(winners.get("local", 0)),
        remote_wins=int(winners.get("remote", 0)),
        files=files,
    )


def run_winner(calls: int, runs: int) -> WinnerResult:
    """``choose_winner`` under last_write_wins, over pairs with distinct times."""
    base = utcnow() - dt.timedelta(days=1)
    now = iso(utcnow())
    pairs = [
        (
            conflicts.Side(1, iso(base + dt.timedelta(milliseconds=2 * i)), READER_ID, {}),
            conflicts.Side(2, iso(base + dt.timedelta(milliseconds=3 * i)), WRITER_ID, {}),
        )
        for i in range(calls)
    ]
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        for local, remote in pairs:
            conflicts.choose_winner("last_write_wins", local, remote, now)
        samples.append(time.perf_counter() - start)
    return WinnerResult(calls=calls, run_s=tuple(samples))


# ------------------------------------------------- (3) detection at push ----


def update_items(targets: Sequence[Row], base_version: int, tag: str) -> str:
    items = []
    changed_at = iso(utcnow())
    for m in targets:
        items.append(
            {
                "key": str(ULID()),
                "entity_type": "message",
                "entity_id": m[0],
                "op": "upsert",
                "base_version": base_version,
                "changed_at": changed_at,
                "payload": {
                    "id": m[0],
                    "chat_id": m[1],
                    "role": m[2],
                    "content": f"{m[3]} ({tag})",
                    "privacy": "FULL",
                    "created_at": m[7],
                    "updated_at": changed_at,
                    "deleted_at": None,
                },
            }
        )
    return json.dumps(items)


def run_push_check(
    db_url: str, targets: Sequence[Row], *, repeats: int, quiet: bool
) -> PushCheckResult:
    """Batches of updates on the current version vs stale ones, interleaved
    (one warm-up pair first)."""
    device_url = with_params(db_url, user=DEVICE_ROLE)
    version = 1  # every target is at version 1 after the fill
    applied: list[float] = []
    stale: list[float] = []
    with connect_remote(device_url) as remote:

        def send(kind: str) -> float:
            nonlocal version
            base = version if kind == "applied" else version - 1
            items = update_items(targets, base, f"{kind} on v{base}")
            start = time.perf_counter()
            # A stale change conflicts only when another device wrote the
            # current row: a device never conflicts with itself.
            device = WRITER_ID if kind == "applied" else STALE_WRITER_ID
            results = push_batch(remote, str(ULID()), device, items)
            seconds = time.perf_counter() - start
            want = "applied" if kind == "applied" else "conflict"
            outcomes = {r.outcome for r in results}
            if len(results) != len(targets) or outcomes != {want}:
                raise AssertionError(f"{kind} batch: outcomes {outcomes}, want {want}")
            if kind == "applied":
                version += 1
            return seconds

        for index in range(repeats + 1):
            order = ("applied", "stale") if index % 2 == 0 else ("stale", "applied")
            for kind in order:
                seconds = send(kind)
                if index > 0:
                    (applied if kind == "applied" else stale).append(seconds)
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM acode_sync.conflicts").fetchone()
    logged = int(row[0]) if row else 0
    if logged != (repeats + 1) * len(targets):
        raise AssertionError(f"{logged} conflicts logged, want {(repeats + 1) * len(targets)}")
    progress(f"  push check: {repeats} + 1 pairs of batches of {len(targets)}", quiet)
    return PushCheckResult(
        batch=len(targets), applied_s=tuple(applied), stale_s=tuple(stale), conflicts_logged=logged
    )


# ---------------------------------------------------------------- profile ----


def run_profile(folder: Path, db_url: str, page_size: int, top: int) -> PullProfile:
    device_url = with_params(db_url, user=DEVICE_ROLE)
    conn = fresh_local(folder / "reader-profiled.db")
    profiler = cProfile.Profile()
    try:
        with connect_remote(device_url) as remote:
            puller = Puller(
                conn, reader_config(page_size), READER_ID, conflicts_dir=folder / "profiled"
            )
            start = time.perf_counter()
            profiler.enable()
            puller.pull(remote)
            profiler.disable()
            wall = time.perf_counter() - start
    finally:
        conn.close()
    path = folder / "pull.prof"
    profiler.dump_stats(str(path))
    stats = pstats.Stats(str(path))
    table: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    table = stats.stats  # type: ignore[attr-defined]
    phases = [
        (
            label,
            sum(
                entry[3]
                for (file, _line, name), entry in table.items()
                if name == func and file.endswith(suffix)
            ),
        )
        for label, func, suffix in PULL_PHASES
    ]
    entries = [
        ProfileEntry(name=_label(file, line, name), calls=e[1], tottime_s=e[2], cumtime_s=e[3])
        for (file, line, name), e in table.items()
    ]
    entries.sort(key=lambda e: e.tottime_s, reverse=True)
    return PullProfile(wall_s=wall, phases=phases, top=entries[:top])


def _label(file: str, line: int, name: str) -> str:
    if file == "~":
        return name
    parts = Path(file).parts
    return f"{'/'.join(parts[-2:])}:{line} {name}"


# ------------------------------------------------------------------ whole ----


def run(
    *,
    rows: int = DEFAULT_ROWS,
    page_size: int = DEFAULT_PAGE_SIZE,
    detect_page: int = DETECT_PAGE,
    detect_open: int = DETECT_OPEN,
    detect_repeats: int = DETECT_REPEATS,
    single_repeats: int = SINGLE_REPEATS,
    resolve_items: int = RESOLVE_ITEMS,
    winner_calls: int = WINNER_CALLS,
    push_batch_size: int = PUSH_BATCH,
    push_repeats: int = PUSH_REPEATS,
    admin_url: str = DEFAULT_ADMIN_URL,
    base_dir: Path | None = None,
    profile: bool = False,
    profile_top: int = 15,
    quiet: bool = True,
) -> PullBenchResult:
    """The whole benchmark on a scratch database and a temporary directory."""
    needed = detect_page * (detect_repeats + 1) + single_repeats + 2 * resolve_items
    if rows < max(needed, push_batch_size) or detect_open < 2 or min(page_size, push_repeats) < 1:
        raise ValueError(
            f"rows must be >= {max(needed, push_batch_size)} for these sizes, "
            "detect_open >= 2, page_size and push_repeats >= 1"
        )
    started = time.perf_counter()
    name = f"acode_bench_pull_{os.getpid()}"
    with (
        tempfile.TemporaryDirectory(prefix="acode-bench-pull-", dir=base_dir) as tmp,
        scratch_database(admin_url, name) as db_url,
    ):
        folder = Path(tmp)
        result = PullBenchResult(
            machine=Machine(
                date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                nproc=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0,
                python=platform.python_version(),
                postgres=server_version(admin_url),
                postgres_settings=server_settings(admin_url),
                sqlite=sqlite3.sqlite_version,
                psycopg=psycopg.__version__,
                platform=platform.platform(),
                db_dir=str(folder),
                filesystem=filesystem_of(folder),
                load_at_start=load_average(),
                code=code_version(),
            ),
            rows=rows,
            database=name,
        )
        if result.machine.filesystem in MEMORY_FILESYSTEMS:
            progress(f"warning: {folder} is on {result.machine.filesystem}, not a disk", False)
        progress(f"fill: {rows:,} messages on the server", quiet)
        fill = fill_server(with_params(db_url, user=DEVICE_ROLE), rows)
        settle_server(db_url)
        check_server(db_url, rows)  # its last seq is rows + 1, as Fill says
        result.fill_s = fill.seconds
        progress("(1) pull and apply", quiet)
        fetched: list[Row] = []
        result.pull = run_pull(folder, db_url, fill, page_size, fetched, quiet=quiet)
        chat, messages = fetched[0], fetched[1:]
        progress("(2) detection at pull", quiet)
        result.detection = run_detection(
            folder,
            chat,
            messages,
            page=detect_page,
            open_rows=detect_open,
            repeats=detect_repeats,
            singles=single_repeats,
            page_size=page_size,
        )
        used = detect_page * (detect_repeats + 1) + single_repeats
        result.resolve = run_resolve(
            folder, chat, messages[used:], items=resolve_items, page_size=page_size
        )
        result.winner = run_winner(winner_calls, WINNER_RUNS)
        progress("(3) detection at push", quiet)
        result.push_check = run_push_check(
            db_url, fill.messages[:push_batch_size], repeats=push_repeats, quiet=quiet
        )
        if profile:
            progress("profile: a second full pull under cProfile", quiet)
            result.profile = run_profile(folder, db_url, page_size, profile_top)
    result.elapsed_s = time.perf_counter() - started
    result.load_at_end = load_average()
    return result


# --------------------------------------------------------------- reporting ----


def to_markdown(result: PullBenchResult, command: str | None = None) -> str:
    m = result.machine
    lines = ["### Download and conflict detection: measured", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        f"- date: {m.date}",
        f"- machine: nproc={m.nproc}, Python {m.python}, PostgreSQL {m.postgres} "
        f"(127.0.0.1, same host; {m.postgres_settings}), SQLite {m.sqlite}, "
        f"psycopg {m.psycopg}, {m.platform}",
        f"- load average (1/5/15 min) at start: {m.load_at_start}; at end: {result.load_at_end}",
        f"- code measured: {m.code}",
        f"- local files: fresh, in `{m.db_dir}` ({m.filesystem}), WAL, synchronous=NORMAL",
        f"- scratch database `{result.database}` (dropped after), device role `{DEVICE_ROLE}`; "
        f"server filled with 1 chat + {result.rows:,} messages by direct inserts as the "
        f"device ({result.fill_s:.1f} s, not part of any figure below)",
        f"- total run time: {result.elapsed_s:.0f} s",
        "",
    ]
    p = result.pull
    if p is not None:
        pages = p.fetch_page_ms
        mid = pages[len(pages) // 2] if pages else 0.0
        lines += [
            f"**(1) Pull and apply** of {p.changes:,} changes ({p.rows:,} messages + their "
            f"chat): one `Puller.pull`, page_size {p.page_size:,}, {p.pages} pages, on a fresh "
            "reader; baseline: the same message rows (same 10 columns) in one `executemany` "
            "transaction into a trigger-less copy of `messages`, before and after the pull:",
            "",
            "| | s | rows/s | share of the pull |",
            "|---|--:|--:|--:|",
            f"| pull + apply (ours), end to end | {p.seconds:.2f} | {p.rows_per_s:,.0f} | 100% |",
            f"| - fetch: `pull_page` (server + round trip) | {p.fetch_s:.2f} "
            f"| {p.changes / p.fetch_s:,.0f} | {p.fetch_s / p.seconds:.0%} |",
            f"| - write inbox + cursor (the rest) | {p.inbox_s:.2f} "
            f"| {p.changes / p.inbox_s:,.0f} | {p.inbox_s / p.seconds:.0%} |",
            f"| - `apply_inbox` | {p.apply_s:.2f} | {p.changes / p.apply_s:,.0f} "
            f"| {p.apply_s / p.seconds:.0%} |",
            f"| local work only (inbox + apply) | {p.inbox_s + p.apply_s:.2f} "
            f"| {p.changes / (p.inbox_s + p.apply_s):,.0f} | "
            f"{(p.inbox_s + p.apply_s) / p.seconds:.0%} |",
            f"| raw SQLite insert (baseline, median) | {p.baseline_median_s:.2f} "
            f"| {p.baseline_rows_per_s:,.0f} | |",
            "",
            f"- baseline samples: {', '.join(f'{s:.2f} s' for s in p.baseline_s)}; "
            f"pull / baseline, time per row: {p.ratio:.1f}x",
            f"- `pull_page` per page: first {pages[0]:,.0f} ms, middle {mid:,.0f} ms, "
            f"last {pages[-1]:,.0f} ms (cursor at 0, half-way, at the end)",
        ]
        if p.scans is not None:
            lines.append(
                f"- server, `acode_sync.changes` during the pull: {p.scans.seq_scan:,} "
                f"sequential scans reading {p.scans.seq_tup_read:,} rows, "
                f"{p.scans.idx_scan:,} index scans (for {p.changes:,} changes delivered)"
            )
        lines += [
            f"- checks: reader has {p.local_messages:,} messages and {p.local_chats} chat, "
            f"every column equal to the writer's rows: {p.rows_equal}; inbox {p.inbox}; "
            f"cursor {p.cursor:,} = last seq {p.last_seq:,}; outbox rows {p.outbox_rows}",
            "",
        ]
    if result.detection:
        lines += [
            "**(2) Conflict detection at pull**, as implemented in `apply_inbox`: its "
            "query of pending inbox rows with an open outbox row for the same entity "
            "(one probe of the `sync_outbox_entity` index per change), timed alone inside "
            "the write transaction ("
            f"{DETECT_TIMINGS} timings per page); none of the open rows are "
            "for these entities, so nothing conflicts. `apply_inbox` of the same page "
            "beside it:",
            "",
            "| page (pending rows) | open outbox rows | pages | detection per page µs (median) "
            "| detection per item µs (median) | worst sample, per item µs "
            "| apply_inbox per item µs (median) |",
            "|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for d in result.detection:
            lines.append(
                f"| {d.page:,} | {d.open_rows:,} | {len(d.apply_ns)} "
                f"| {statistics.median(d.detect_ns) / 1e3:,.1f} | {d.detect_us_per_item:,.2f} "
                f"| {d.detect_max_us_per_item:,.2f} | {d.apply_us_per_item:,.1f} |"
            )
        by_key = {(d.page, d.open_rows): d for d in result.detection}
        k = max(d.open_rows for d in result.detection)
        lines.append("")
        for size in sorted({d.page for d in result.detection}, reverse=True):
            if (size, 0) in by_key and (size, k) in by_key:
                extra = by_key[(size, k)].apply_us_per_item - by_key[(size, 0)].apply_us_per_item
                lines.append(
                    f"- `apply_inbox` with {k:,} open rows vs none, page of {size:,}: "
                    f"{extra:+,.2f} µs per item"
                )
        lines.append("")
    r = result.resolve
    if r is not None:
        lines += [
            f"**Resolution of real conflicts at pull**: `apply_inbox` of {r.items} remote "
            f"updates (version 2) of messages with a local edit pending: {r.conflict_s * 1e3:.1f}"
            f" ms ({r.local_wins} local wins, {r.remote_wins} remote wins, {r.files} loser "
            f"files written, ACODE-SYNC-003 logged to a buffer) vs {r.items} remote updates of "
            f"messages without local edits: {r.clean_s * 1e3:.1f} ms; extra per conflicting "
            f"item: {r.extra_us_per_item:,.0f} µs (the remote rows are made locally from "
            "pulled rows).",
            "",
        ]
    w = result.winner
    if w is not None:
        lines += [
            f"**`conflicts.choose_winner`** (last_write_wins, two ISO times parsed and "
            f"compared): {w.us_per_call:.2f} µs per call (median of {len(w.run_s)} runs of "
            f"{w.calls:,} calls).",
            "",
        ]
    c = result.push_check
    if c is not None:
        lines += [
            f"**(3) Conflict detection at push** (server): `remote.push_batch` of {c.batch:,} "
            "message updates, one round trip and one server transaction each, JSON built "
            f"before timing; {len(c.applied_s)} of each kind after a warm-up pair, "
            "interleaved:",
            "",
            "| batch | median ms | min ms | max ms | per item µs |",
            "|---|--:|--:|--:|--:|",
            f"| {c.batch:,} updates on the current version (applied) | {c.applied_ms:.1f} "
            f"| {min(c.applied_s) * 1e3:.1f} | {max(c.applied_s) * 1e3:.1f} "
            f"| {c.applied_ms / c.batch * 1e3:.1f} |",
            f"| {c.batch:,} stale updates (conflict, logged) | {c.stale_ms:.1f} "
            f"| {min(c.stale_s) * 1e3:.1f} | {max(c.stale_s) * 1e3:.1f} "
            f"| {c.stale_us_per_item:.1f} |",
            "",
            f"- extra per conflicting item (stale - applied): {c.extra_us_per_item:+.1f} µs; "
            f"conflict rows logged on the server: {c.conflicts_logged:,}",
            "",
        ]
    lines += ["Against the targets:", ""]
    spec_typical_us = SPEC_DETECT_TYPICAL_MS * 1e3
    spec_max_us = SPEC_DETECT_MAX_MS * 1e3
    ours_us = TARGET_DETECT_MS * 1e3
    if p is not None:
        rate = verdict(p.rows_per_s, TARGET_PULL_ROWS_PER_S, " rows/s", at_least=True, digits=0)
        lines.append(f"- ours, pull + apply >= {TARGET_PULL_ROWS_PER_S:,g} rows/s: {rate}")
    for d in result.detection:
        typical, worst = d.detect_us_per_item, d.detect_max_us_per_item
        lines.append(
            f"- detection at pull per item, page of {d.page:,}, {d.open_rows:,} open rows: "
            f"spec typical {verdict(typical, spec_typical_us, ' µs')}, max "
            f"{verdict(worst, spec_max_us, ' µs')}; ours: typical "
            f"{verdict(typical, ours_us, ' µs')}, worst {verdict(worst, ours_us, ' µs')}"
        )
    if w is not None:
        lines.append(f"- `choose_winner` per call: ours {verdict(w.us_per_call, ours_us, ' µs')}")
    if c is not None:
        worst_extra = (max(c.stale_s) * 1e3 - c.applied_ms) / c.batch * 1e3
        lines.append(
            "- detection at push, extra per conflicting item (stale - applied batch, medians): "
            f"spec typical {verdict(c.extra_us_per_item, spec_typical_us, ' µs')}, max "
            f"(slowest stale batch) {verdict(worst_extra, spec_max_us, ' µs')}; ours "
            f"{verdict(c.extra_us_per_item, ours_us, ' µs')}"
        )
    if r is not None:
        lines.append(
            "- (for scale, not a detection target) resolution of a real conflict at pull, "
            f"extra per item: {r.extra_us_per_item:,.0f} µs"
        )
    prof = result.profile
    if prof is not None:
        lines += profile_lines(
            f"**Profile** (cProfile, a second full pull on a fresh reader, {prof.wall_s:.1f} s "
            "under the profiler; cumulative time per phase):",
            prof.wall_s,
            prof.phases,
            prof.top,
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------- cli ----


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="messages on the server")
    parser.add_argument("--page-size", type=int, default=DEFAULT_PAGE_SIZE)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="an admin (superuser)")
    parser.add_argument("--dir", type=Path, default=None, help="where the temp dir goes")
    parser.add_argument("--profile", action="store_true", help="add a cProfile run of a pull")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python benchmarks/pull.py", *given])
    result = run(
        rows=args.rows,
        page_size=args.page_size,
        admin_url=args.admin_url,
        base_dir=args.dir,
        profile=args.profile,
        quiet=args.quiet,
    )
    report = to_markdown(result, command)
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
