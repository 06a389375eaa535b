"""Benchmark: the outbox write, beside a plain insert measured in the same run.

The outbox write is one transaction: ``BEGIN IMMEDIATE``; INSERT one message
row, whose capture trigger inserts the outbox row; ``COMMIT``. It is timed per
transaction with ``time.perf_counter_ns`` for ``PRAGMA synchronous=NORMAL`` and
``synchronous=FULL`` (WAL in both), each on fresh database files in a temporary
directory on disk.

Three sides, each a database migrated the same way, under the same
``synchronous`` setting:

- **captured**: as migrated (the capture triggers);
- **baseline** (the plain insert): the capture triggers dropped;
- **floor**: the capture triggers dropped and one trigger that inserts a
  constant row into ``sync_outbox`` (no key, no JSON, no lookups) in their
  place: what any capture by trigger costs at least (``harness.floor_capture``).

The sides run in interleaved blocks (order rotated every block) so the noise
of a shared machine falls on all alike.

Bulk: N inserts (default 100,000) in one transaction (``executemany``) per
side, repeated (default 3 times, fresh files each time, order rotated), with a
check that the outbox got N rows with N distinct idempotency keys. The figure
is the median time of each side; the ratio is captured over baseline.

Issue 9's targets: outbox write p50 <= 2x the plain insert in both modes;
100,000 captured inserts in one transaction <= 2.5x the plain ones.

Run::

    python benchmarks/outbox_write.py [--n N] [--bulk N] [--repeats R] [--out FILE]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import (
    MEMORY_FILESYSTEMS,
    Latency,
    Machine,
    describe_machine,
    drop_capture_triggers,
    emit,
    floor_capture,
    fresh_local,
    machine_lines,
    progress,
    verdict,
)
from ulid import ULID

from acode_sync.store import new_chat
from acode_sync.workspace import write

MODES = ("NORMAL", "FULL")
SIDES = ("captured", "baseline", "floor")
SYNCHRONOUS_CODES = {"NORMAL": 1, "FULL": 2}

DEFAULT_N = 5000
DEFAULT_WARMUP = 200
DEFAULT_BLOCK = 500
DEFAULT_BULK_N = 100_000
DEFAULT_REPEATS = 3

# Targets the results are compared against.
SPEC_TYPICAL_MS = 5.0  # specification: outbox write, typical
SPEC_MAX_MS = 10.0  # specification: outbox write, max
TARGET_P99_FULL_MS = 1.0  # ours: p99 with synchronous=FULL
TARGET_P50_RATIO = 2.0  # issue 9: outbox write p50 <= 2x the plain insert
TARGET_BULK_RATIO = 2.5  # issue 9: 100,000 captured inserts <= 2.5x plain

INSERT_MESSAGE = "INSERT INTO messages (id, chat_id, role, content) VALUES (?, ?, ?, ?)"
# A chat message of ordinary length (about 300 bytes), the same on every side.
CONTENT = (
    "Could you refactor the retry loop in the push worker so that it backs off "
    "exponentially with jitter, caps the delay at five minutes, and records the last "
    "error on the outbox row? Keep the existing behaviour for permanent failures and "
    "add a unit test for the cap. Thanks!"
)


# ---------------------------------------------------------------- results ----


@dataclass(frozen=True)
class ModeResult:
    mode: str
    latency: dict[str, Latency]  # side -> per-transaction latency
    outbox_rows: dict[str, int]  # side -> message rows in its outbox (warm-up included)

    def ratio_p50(self, side: str = "captured") -> float:
        return self.latency[side].p50_ms / self.latency["baseline"].p50_ms

    def ratio_p99(self, side: str = "captured") -> float:
        return self.latency[side].p99_ms / self.latency["baseline"].p99_ms


@dataclass(frozen=True)
class BulkResult:
    mode: str
    rows: int
    seconds: dict[str, list[float]]  # side -> one time per repeat
    outbox_rows: int  # of the captured side, every repeat
    distinct_keys: int

    def median_s(self, side: str) -> float:
        return statistics.median(self.seconds[side])

    def ratio(self, side: str = "captured") -> float:
        """Median time of ``side`` over the baseline's."""
        return self.median_s(side) / self.median_s("baseline")

    def ratio_range(self, side: str = "captured") -> tuple[float, float]:
        """Lowest and highest ratio of one repeat (sides of a repeat ran together)."""
        pairs = [s / b for s, b in zip(self.seconds[side], self.seconds["baseline"], strict=True)]
        return min(pairs), max(pairs)


@dataclass(frozen=True)
class BenchResult:
    machine: Machine
    n: int
    warmup: int
    block: int
    repeats: int
    modes: dict[str, ModeResult]
    bulk: dict[str, BulkResult]
    elapsed_s: float


# ------------------------------------------------------------- benchmarks ----


def open_db(path: Path, mode: str, side: str) -> tuple[sqlite3.Connection, str]:
    """A fresh migrated database with one chat, made into ``side``."""
    conn = fresh_local(path, synchronous=mode)
    try:
        if side == "baseline":
            drop_capture_triggers(conn)
        elif side == "floor":
            floor_capture(conn)
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
        triggers = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'")
        if journal != "wal" or synchronous != SYNCHRONOUS_CODES[mode]:
            raise RuntimeError(f"{path}: journal_mode={journal} synchronous={synchronous}")
        if (triggers.fetchone()[0] > 0) != (side != "baseline"):
            raise RuntimeError(f"{path}: the {side} side has the wrong triggers")
        return conn, new_chat(conn, "benchmark")
    except BaseException:
        conn.close()
        raise


def timed_inserts(
    conn: sqlite3.Connection, chat_id: str, count: int, samples: list[int] | None
) -> None:
    """``count`` outbox writes, one transaction each; latencies appended to ``samples``."""
    ids = [str(ULID()) for _ in range(count)]
    clock = time.perf_counter_ns
    for message_id in ids:
        start = clock()
        with write(conn):
            conn.execute(INSERT_MESSAGE, (message_id, chat_id, "user", CONTENT))
        end = clock()
        if samples is not None:
            samples.append(end - start)


def message_outbox_rows(conn: sqlite3.Connection) -> tuple[int, int]:
    """(message rows in the outbox, distinct idempotency keys among them)."""
    row = conn.execute(
        "SELECT count(*), count(DISTINCT idempotency_key) FROM sync_outbox "
        "WHERE entity_type = 'message'"
    ).fetchone()
    return int(row[0]), int(row[1])


def _rotated(index: int) -> tuple[str, ...]:
    shift = index % len(SIDES)
    return SIDES[shift:] + SIDES[:shift]


def run_latency(
    folder: Path, mode: str, *, n: int, warmup: int, block: int, quiet: bool = True
) -> ModeResult:
    """Every side's outbox writes under ``mode``, in interleaved blocks."""
    sides = {side: open_db(folder / f"latency-{side}-{mode}.db", mode, side) for side in SIDES}
    samples: dict[str, list[int]] = {side: [] for side in SIDES}
    try:
        for conn, chat_id in sides.values():
            timed_inserts(conn, chat_id, warmup, None)
        done, index = 0, 0
        while done < n:
            size = min(block, n - done)
            for side in _rotated(index):
                conn, chat_id = sides[side]
                timed_inserts(conn, chat_id, size, samples[side])
            done += size
            index += 1
        progress(f"  {mode}: {n} transactions per side done", quiet)
        rows = {side: message_outbox_rows(conn)[0] for side, (conn, _) in sides.items()}
    finally:
        for conn, _ in sides.values():
            conn.close()
    # The captured and floor sides must really have written the outbox, the baseline not.
    want = {"captured": warmup + n, "baseline": 0, "floor": warmup + n}
    if rows != want:
        raise AssertionError(f"{mode}: outbox rows {rows}, want {want}")
    latency = {side: Latency.of_ns(samples[side]) for side in SIDES}
    return ModeResult(mode=mode, latency=latency, outbox_rows=rows)


def _bulk_insert(conn: sqlite3.Connection, chat_id: str, rows: int) -> float:
    params = [(str(ULID()), chat_id, "user", CONTENT) for _ in range(rows)]
    start = time.perf_counter_ns()
    with write(conn):
        conn.executemany(INSERT_MESSAGE, params)
    return (time.perf_counter_ns() - start) / 1e9


def run_bulk(folder: Path, mode: str, *, rows: int, repeats: int) -> BulkResult:
    """``rows`` inserts in one transaction per side, ``repeats`` times on fresh files."""
    seconds: dict[str, list[float]] = {side: [] for side in SIDES}
    for repeat in range(repeats):
        for side in _rotated(repeat):
            conn, chat_id = open_db(folder / f"bulk-{side}-{mode}-{repeat}.db", mode, side)
            try:
                seconds[side].append(_bulk_insert(conn, chat_id, rows))
                outbox_rows, distinct_keys = message_outbox_rows(conn)
                stored = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
            finally:
                conn.close()
            for name in (f"bulk-{side}-{mode}-{repeat}.db", "-wal", "-shm"):
                (folder / name).unlink(missing_ok=True)
            want = {"captured": (rows, rows), "baseline": (0, 0), "floor": (rows, 1)}[side]
            if (outbox_rows, distinct_keys) != want or stored != rows:
                raise AssertionError(
                    f"{mode} bulk, {side}: {stored} messages gave {outbox_rows} outbox rows "
                    f"with {distinct_keys} distinct keys (want {want})"
                )
    return BulkResult(mode, rows, seconds, outbox_rows=rows, distinct_keys=rows)


def run(
    *,
    n: int = DEFAULT_N,
    warmup: int = DEFAULT_WARMUP,
    block: int = DEFAULT_BLOCK,
    bulk_rows: int = DEFAULT_BULK_N,
    repeats: int = DEFAULT_REPEATS,
    base_dir: Path | None = None,
    quiet: bool = True,
) -> BenchResult:
    """The whole benchmark, in a temporary directory under ``base_dir``."""
    if n < 1 or warmup < 0 or block < 1 or bulk_rows < 1 or repeats < 1:
        raise ValueError("n, block, bulk_rows and repeats must be >= 1, warmup >= 0")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="acode-bench-", dir=base_dir) as name:
        folder = Path(name)
        machine = describe_machine(db_dir=folder)
        if machine.filesystem in MEMORY_FILESYSTEMS:
            progress(f"warning: {folder} is on {machine.filesystem}, not a disk; pass --dir", False)
        modes: dict[str, ModeResult] = {}
        bulk: dict[str, BulkResult] = {}
        for mode in MODES:
            progress(f"latency, synchronous={mode}", quiet)
            modes[mode] = run_latency(folder, mode, n=n, warmup=warmup, block=block, quiet=quiet)
        for mode in MODES:
            progress(f"bulk, synchronous={mode}", quiet)
            bulk[mode] = run_bulk(folder, mode, rows=bulk_rows, repeats=repeats)
    return BenchResult(
        machine, n, warmup, block, repeats, modes, bulk, time.perf_counter() - started
    )


# --------------------------------------------------------------- reporting ----


def to_markdown(result: BenchResult, command: str | None = None) -> str:
    m = result.machine
    lines = ["### Outbox write", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        *machine_lines(m),
        f"- database files: fresh, in `{m.db_dir}` ({m.filesystem}), WAL",
        f"- per-transaction latency: {result.n} transactions per side and mode after a "
        f"warm-up of {result.warmup}, the sides interleaved in blocks of {result.block}",
        f"- bulk: {result.repeats} repeats per mode, fresh files, order rotated; median",
        f"- total run time: {result.elapsed_s:.0f} s",
        "",
        "Per-transaction latency (BEGIN IMMEDIATE; INSERT one message; COMMIT), ms "
        "(p50 / p99 / max); ratios to the baseline (the plain insert):",
        "",
        "| synchronous | captured | baseline | floor | captured/baseline p50 "
        "| captured/baseline p99 | floor/baseline p50 |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for mode in result.modes.values():
        cells = [
            f"{lat.p50_ms:.3f} / {lat.p99_ms:.3f} / {lat.max_ms:.3f}"
            for lat in (mode.latency[side] for side in SIDES)
        ]
        lines.append(
            f"| {mode.mode} | {' | '.join(cells)} | {mode.ratio_p50():.2f}x "
            f"| {mode.ratio_p99():.2f}x | {mode.ratio_p50('floor'):.2f}x |"
        )
    lines += [
        "",
        "Bulk: inserts in one transaction (executemany), seconds (median, each repeat):",
        "",
        "| synchronous | rows | captured s | baseline s | floor s | captured/baseline "
        "(repeats) | floor/baseline | captured rows/s | outbox rows, distinct keys |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for bulk in result.bulk.values():
        each = {side: ", ".join(f"{s:.2f}" for s in bulk.seconds[side]) for side in SIDES}
        low, high = bulk.ratio_range()
        lines.append(
            f"| {bulk.mode} | {bulk.rows:,} | {bulk.median_s('captured'):.2f} "
            f"({each['captured']}) | {bulk.median_s('baseline'):.2f} ({each['baseline']}) "
            f"| {bulk.median_s('floor'):.2f} ({each['floor']}) | {bulk.ratio():.2f}x "
            f"({low:.2f}-{high:.2f}) | {bulk.ratio('floor'):.2f}x "
            f"| {bulk.rows / bulk.median_s('captured'):,.0f} "
            f"| {bulk.outbox_rows:,}, {bulk.distinct_keys:,} |"
        )
    lines += ["", "Against the targets:", ""]
    for mode in result.modes.values():
        lines.append(
            f"- issue 9, outbox write p50 <= 2x plain, {mode.mode}: "
            f"{verdict(mode.ratio_p50(), TARGET_P50_RATIO, 'x', digits=2)} "
            f"(floor {mode.ratio_p50('floor'):.2f}x)"
        )
    for bulk in result.bulk.values():
        lines.append(
            f"- issue 9, {bulk.rows:,} captured inserts in one transaction <= 2.5x plain, "
            f"{bulk.mode}: {verdict(bulk.ratio(), TARGET_BULK_RATIO, 'x', digits=2)} "
            f"(floor {bulk.ratio('floor'):.2f}x)"
        )
    for mode in result.modes.values():
        c = mode.latency["captured"]
        lines.append(
            f"- spec, {mode.mode}: typical (p50) "
            f"{verdict(c.p50_ms, SPEC_TYPICAL_MS, ' ms', digits=3)}; "
            f"max {verdict(c.max_ms, SPEC_MAX_MS, ' ms', digits=3)}"
        )
    full = result.modes.get("FULL")
    if full is not None:
        lines.append(
            f"- ours, p99 with synchronous=FULL: "
            f"{verdict(full.latency['captured'].p99_ms, TARGET_P99_FULL_MS, ' ms', digits=3)}"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------- cli ----


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="transactions per side and mode")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    parser.add_argument("--block", type=int, default=DEFAULT_BLOCK, help="interleaving block")
    parser.add_argument("--bulk", type=int, default=DEFAULT_BULK_N, help="rows of the bulk run")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="bulk repeats")
    parser.add_argument("--dir", type=Path, default=None, help="where the temp dir goes")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python benchmarks/outbox_write.py", *given])
    result = run(
        n=args.n,
        warmup=args.warmup,
        block=args.block,
        bulk_rows=args.bulk,
        repeats=args.repeats,
        base_dir=args.dir,
        quiet=args.quiet,
    )
    emit(to_markdown(result, command), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
