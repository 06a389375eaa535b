"""The paced write locks' gaps (``acode_sync.pacing``), on a clock the test
drives: how long the lock is left free after each slice."""

from __future__ import annotations

import sqlite3
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from acode_sync import pacing
from acode_sync.pacing import IDLE_GAP_S, Checkpointer, Pacer
from acode_sync.workspace import connect, write


class FakeTime:
    """Stands in for the ``time`` module inside ``acode_sync.pacing``."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(pacing, "time", fake)
    return fake


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    db = connect(tmp_path / "paced.db")
    db.execute("CREATE TABLE t (x)")
    yield db
    db.close()


def slices(
    pacer: Pacer, clock: FakeTime, holds_ms: list[float], *, other: sqlite3.Connection | None = None
) -> list[float]:
    """Run slices of the given holds back to back; the sleeps before each."""
    gaps = []
    for hold in holds_ms:
        clock.slept.clear()
        started = pacer.before()
        gaps.append(sum(clock.slept))
        clock.now += hold / 1000
        pacer.held(started, 100)
        pacer.released()
        if other is not None:
            other.execute("INSERT INTO t VALUES (1)")
    pacer.close()  # the checkpoint thread the slices started (if any) ends
    return gaps


def test_uncontended_slices_leave_a_short_gap_after_each(
    clock: FakeTime, conn: sqlite3.Connection
) -> None:
    gaps = slices(Pacer(conn), clock, [10, 10, 10, 10])
    assert gaps == [0, IDLE_GAP_S, IDLE_GAP_S, IDLE_GAP_S]


def test_a_bursty_writer_runs_back_to_back_until_its_run_is_long(
    clock: FakeTime, conn: sqlite3.Connection
) -> None:
    pacer = Pacer(conn, idle_run_s=0.030)
    # One batch's marking: three slices of 10 ms, then one more after 30 ms of holds.
    assert slices(pacer, clock, [10, 10, 10, 10]) == [0, 0, 0, IDLE_GAP_S]
    # Then the lock was free for the gap: a new run.
    assert slices(pacer, clock, [10, 10]) == [0, 0]
    # The next batch is planned meanwhile (the lock free 30 ms): a new run again.
    clock.now += 0.030
    assert slices(pacer, clock, [10, 10, 10]) == [0, 0, 0]


def test_while_another_process_writes_every_slice_has_its_full_gap(
    clock: FakeTime, conn: sqlite3.Connection, tmp_path: Path
) -> None:
    other = connect(tmp_path / "paced.db")
    pacer = Pacer(conn, idle_run_s=0.030)
    gaps = slices(pacer, clock, [10, 10, 10, 10], other=other)
    # data_version moves with the other connection's commits: the full gap
    # (the busy step after 10 ms of waiting, and the margin) from the second
    # slice on.
    assert gaps[2:] == [pytest.approx(0.012), pytest.approx(0.012)]
    other.close()


def test_a_write_before_the_first_slice_gives_the_next_its_full_gap(
    clock: FakeTime, conn: sqlite3.Connection, tmp_path: Path
) -> None:
    """Another process that wrote between the pacer's making and its first
    slice (during the pull's first round trip) is writing now, and may be
    waiting for the lock already: it gets the full gap at once."""
    other = connect(tmp_path / "paced.db")
    pacer = Pacer(conn)
    other.execute("INSERT INTO t VALUES (1)")
    assert slices(pacer, clock, [10, 10]) == [0, pytest.approx(0.012)]
    other.close()


def test_the_gap_is_the_busy_step_a_writer_waiting_through_the_hold_is_in(
    clock: FakeTime, conn: sqlite3.Connection, tmp_path: Path
) -> None:
    other = connect(tmp_path / "paced.db")
    gaps = slices(Pacer(conn), clock, [10, 25, 5, 40, 1], other=other)
    # A writer that came at the start of a hold of 25 ms sleeps 15 ms at its
    # end (its retries at 18 and 33 ms): the lock stays free that long and the
    # margin. After 10 ms of holding a 10 ms step, after 5 ms 5, after 40 20.
    assert gaps == [
        0,
        pytest.approx(0.012),
        pytest.approx(0.017),
        pytest.approx(0.007),
        pytest.approx(0.022),
    ]
    other.close()


def wal_frames(db: Path) -> tuple[int, int]:
    """(frames in the WAL, of which checkpointed): the wal-index header's
    mxFrame and the checkpoint info's nBackfill, read from the ``-shm``
    without a connection (https://www.sqlite.org/walformat.html)."""
    head = (db.parent / (db.name + "-shm")).read_bytes()[:100]
    return struct.unpack_from("=I", head, 16)[0], struct.unpack_from("=I", head, 96)[0]


def paced_slice(pacer: Pacer, conn: sqlite3.Connection, clock: FakeTime, rows: int = 200) -> None:
    started = pacer.before()
    with write(conn):
        conn.executemany("INSERT INTO t VALUES (?)", (("x" * 1000,) for _ in range(rows)))
        clock.now += 0.010
        pacer.held(started, rows)
    pacer.released()


def checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "acode-sync-checkpoint"]


def test_while_another_process_writes_the_wal_is_checkpointed_after_each_slice(
    clock: FakeTime, conn: sqlite3.Connection, tmp_path: Path
) -> None:
    """Only these checkpoints keep this WAL from growing (the automatic one is
    off here), slice after slice."""
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    other = connect(tmp_path / "paced.db")
    wal = tmp_path / "paced.db-wal"
    sizes = []
    with Pacer(conn) as pacer:
        for _ in range(6):
            paced_slice(pacer, conn, clock)
            other.execute("INSERT INTO t VALUES (1)")
            sizes.append(wal.stat().st_size)
            pacer.before()  # the next slice starts the checkpoint owed ...
            pacer.close()  # ... which ends here
    # ~60 pages a slice; the WAL starts over after each checkpoint.
    assert max(sizes[2:]) < 2 * sizes[0]
    other.close()


def test_the_checkpoint_runs_on_its_own_thread_once_the_gap_is_over(
    clock: FakeTime, conn: sqlite3.Connection, tmp_path: Path
) -> None:
    """Not in the gap, where a writer that waited commits and its fsync of the
    same WAL would wait for the checkpoint's I/O, and not in the caller's
    thread: the gap ends, the next slice starts, the checkpoint runs beside it."""
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    other = connect(tmp_path / "paced.db")
    db = tmp_path / "paced.db"
    pacer = Pacer(conn)
    other.execute("INSERT INTO t VALUES (1)")  # another process writes
    paced_slice(pacer, conn, clock)
    frames, done = wal_frames(db)
    assert frames > 40 and done == 0  # released, the gap begins: nothing checkpointed
    assert checkpoint_threads() == []
    pacer.before()
    assert [t.is_alive() for t in checkpoint_threads()] == [True]
    pacer.close()
    assert wal_frames(db) == (frames, frames)  # all of it, by the thread
    assert checkpoint_threads() == []
    other.close()


def test_an_uncontended_bulk_write_starts_no_checkpoint(
    clock: FakeTime, conn: sqlite3.Connection, tmp_path: Path
) -> None:
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    with Pacer(conn) as pacer:
        for _ in range(3):
            paced_slice(pacer, conn, clock)
            pacer.before()
            assert checkpoint_threads() == []
            pacer.released()
    frames, done = wal_frames(tmp_path / "paced.db")
    assert frames > 0 and done == 0


def test_a_checkpointer_of_a_file_gone_ends_quietly(tmp_path: Path) -> None:
    """It never makes a file: a path that is not there (the workspace moved
    away mid-sync) ends its thread, and closing it does not hang."""
    gone = tmp_path / "gone.db"
    checkpointer = Checkpointer(str(gone))
    checkpointer.start()
    checkpointer.close()
    assert not gone.exists()
    assert checkpoint_threads() == []
