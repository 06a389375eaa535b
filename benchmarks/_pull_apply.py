"""(1) Pull and apply, end to end, on a fresh reader, its time split in the same
run; beside it, a raw SQLite insert of the same rows."""

from __future__ import annotations

import math
import sqlite3
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import psycopg
from _pull_fill import MESSAGE_COLUMNS, READER_ID, Fill, Row, reader_config
from harness import DEVICE_ROLE, drop_capture_triggers, fresh_local, progress, with_params

from acode_sync import download
from acode_sync.download import Puller, PullReport
from acode_sync.engine import connect_remote
from acode_sync.remote import pull_page
from acode_sync.workspace import write

BASELINE_INSERT = f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


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
        """The rest: writing the inbox and the cursor, the gaps between slices,
        less whatever of the fetches overlapped the local work (so it may be 0)."""
        return max(self.seconds - self.fetch_s - self.apply_s, 1e-6)

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


class TimedPuller(Puller):
    """The Puller with the apply of each stored slice timed; nothing else differs.
    (The next page is fetched while a page is stored and applied, so the fetch
    and the apply times overlap.)"""

    apply_s: float = 0.0

    def _apply_pending(
        self, report: PullReport, now: str, part: list[tuple[Any, ...]] | None = None
    ) -> None:
        start = time.perf_counter()
        try:
            super()._apply_pending(report, now, part)
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
        drop_capture_triggers(conn)
        with write(conn):
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
