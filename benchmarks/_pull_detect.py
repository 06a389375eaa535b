"""(2) Conflict detection at pull, as ``apply_inbox`` does it, and the resolution
of real conflicts; ``conflicts.choose_winner`` per call."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import sqlite3
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from _pull_fill import READER_ID, WRITER_ID, Row, fill_inbox, reader_config
from harness import CONTENT, fresh_local
from ulid import ULID

from acode_sync import conflicts
from acode_sync.clock import iso, utcnow
from acode_sync.download import Puller, PullReport
from acode_sync.queries import query
from acode_sync.store import new_chat
from acode_sync.workspace import write

DETECT_TIMINGS = 5  # timings of the detection step per page (it only reads)


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
