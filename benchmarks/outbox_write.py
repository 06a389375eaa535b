"""Benchmark: the outbox write, beside a plain insert measured in the same run.

The outbox write is one transaction: ``BEGIN IMMEDIATE``; INSERT one message
row, whose capture trigger inserts the outbox row; ``COMMIT``. It is timed per
transaction with ``time.perf_counter_ns`` for ``PRAGMA synchronous=NORMAL`` and
``synchronous=FULL`` (WAL in both), each on fresh database files in a temporary
directory on disk.

The baseline is the same insert into a database migrated the same way whose
capture triggers were then dropped, under the same ``synchronous`` setting. The
two are run in interleaved blocks (captured/baseline, then baseline/captured,
...) so the noise of a shared machine falls on both alike.

Bulk: N inserts (default 100,000) in one transaction, captured vs baseline,
with a check that the outbox got N rows with N distinct idempotency keys.

Run::

    python benchmarks/outbox_write.py [--n N] [--out FILE]
"""

from __future__ import annotations

import argparse
import sqlite3
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
    fresh_local,
    machine_lines,
    progress,
    verdict,
)
from ulid import ULID

from acode_sync.store import new_chat
from acode_sync.workspace import write

MODES = ("NORMAL", "FULL")
SYNCHRONOUS_CODES = {"NORMAL": 1, "FULL": 2}

DEFAULT_N = 5000
DEFAULT_WARMUP = 200
DEFAULT_BLOCK = 500
DEFAULT_BULK_N = 100_000

# Targets the results are compared against.
SPEC_TYPICAL_MS = 5.0  # specification: outbox write, typical
SPEC_MAX_MS = 10.0  # specification: outbox write, max
TARGET_P99_FULL_MS = 1.0  # ours: p99 with synchronous=FULL
TARGET_MAX_RATIO = 2.0  # ours: capture costs at most 2x the plain insert

INSERT_MESSAGE = "INSERT INTO messages (id, chat_id, role, content) VALUES (?, ?, ?, ?)"
# A chat message of ordinary length (about 300 bytes), the same on both sides.
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
    captured: Latency
    baseline: Latency
    captured_outbox_rows: int  # message rows in the captured outbox (warm-up included)
    baseline_outbox_rows: int  # must be 0: the baseline has no triggers

    @property
    def ratio_p50(self) -> float:
        return self.captured.p50_ms / self.baseline.p50_ms

    @property
    def ratio_p99(self) -> float:
        return self.captured.p99_ms / self.baseline.p99_ms


@dataclass(frozen=True)
class BulkResult:
    mode: str
    rows: int
    captured_s: float
    baseline_s: float
    outbox_rows: int
    distinct_keys: int

    @property
    def captured_rows_per_s(self) -> float:
        return self.rows / self.captured_s

    @property
    def baseline_rows_per_s(self) -> float:
        return self.rows / self.baseline_s

    @property
    def ratio(self) -> float:
        """Captured time over baseline time."""
        return self.captured_s / self.baseline_s


@dataclass(frozen=True)
class BenchResult:
    machine: Machine
    n: int
    warmup: int
    block: int
    modes: dict[str, ModeResult]
    bulk: dict[str, BulkResult]
    elapsed_s: float


# ------------------------------------------------------------- benchmarks ----


def open_db(path: Path, mode: str, *, captured: bool) -> tuple[sqlite3.Connection, str]:
    """A fresh migrated database with one chat; the baseline loses its triggers."""
    conn = fresh_local(path, synchronous=mode)
    try:
        if not captured:
            drop_capture_triggers(conn)
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
        triggers_left = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"
        ).fetchone()[0]
        if journal != "wal" or synchronous != SYNCHRONOUS_CODES[mode]:
            raise RuntimeError(f"{path}: journal_mode={journal} synchronous={synchronous}")
        if (triggers_left > 0) != captured:
            raise RuntimeError(f"{path}: {triggers_left} triggers, captured={captured}")
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


def run_latency(
    folder: Path, mode: str, *, n: int, warmup: int, block: int, quiet: bool = True
) -> ModeResult:
    """Captured and baseline outbox writes under ``mode``, in interleaved blocks."""
    captured, captured_chat = open_db(folder / f"latency-captured-{mode}.db", mode, captured=True)
    baseline, baseline_chat = open_db(folder / f"latency-baseline-{mode}.db", mode, captured=False)
    sides = {"captured": (captured, captured_chat), "baseline": (baseline, baseline_chat)}
    samples: dict[str, list[int]] = {"captured": [], "baseline": []}
    try:
        for name in ("captured", "baseline"):
            conn, chat_id = sides[name]
            timed_inserts(conn, chat_id, warmup, None)
        done, index = 0, 0
        while done < n:
            size = min(block, n - done)
            order = ("captured", "baseline") if index % 2 == 0 else ("baseline", "captured")
            for name in order:
                conn, chat_id = sides[name]
                timed_inserts(conn, chat_id, size, samples[name])
            done += size
            index += 1
        progress(f"  {mode}: {n} + {n} transactions done", quiet)
        captured_rows, _ = message_outbox_rows(captured)
        baseline_rows, _ = message_outbox_rows(baseline)
    finally:
        captured.close()
        baseline.close()
    # The captured side must really have captured, the baseline must not have.
    if captured_rows != warmup + n or baseline_rows != 0:
        raise AssertionError(
            f"{mode}: outbox rows captured={captured_rows} (want {warmup + n}), "
            f"baseline={baseline_rows} (want 0)"
        )
    return ModeResult(
        mode=mode,
        captured=Latency.of_ns(samples["captured"]),
        baseline=Latency.of_ns(samples["baseline"]),
        captured_outbox_rows=captured_rows,
        baseline_outbox_rows=baseline_rows,
    )


def _bulk_insert(conn: sqlite3.Connection, chat_id: str, rows: int) -> float:
    params = [(str(ULID()), chat_id, "user", CONTENT) for _ in range(rows)]
    start = time.perf_counter_ns()
    with write(conn):
        conn.executemany(INSERT_MESSAGE, params)
    return (time.perf_counter_ns() - start) / 1e9


def run_bulk(folder: Path, mode: str, *, rows: int, captured_first: bool) -> BulkResult:
    """``rows`` inserts in one transaction, captured and baseline, on fresh files."""
    captured, captured_chat = open_db(folder / f"bulk-captured-{mode}.db", mode, captured=True)
    baseline, baseline_chat = open_db(folder / f"bulk-baseline-{mode}.db", mode, captured=False)
    try:
        if captured_first:
            captured_s = _bulk_insert(captured, captured_chat, rows)
            baseline_s = _bulk_insert(baseline, baseline_chat, rows)
        else:
            baseline_s = _bulk_insert(baseline, baseline_chat, rows)
            captured_s = _bulk_insert(captured, captured_chat, rows)
        outbox_rows, distinct_keys = message_outbox_rows(captured)
        baseline_rows, _ = message_outbox_rows(baseline)
        stored = baseline.execute("SELECT count(*) FROM messages").fetchone()[0]
    finally:
        captured.close()
        baseline.close()
    if outbox_rows != rows or distinct_keys != rows:
        raise AssertionError(
            f"{mode} bulk: {rows} captured writes gave {outbox_rows} outbox rows "
            f"with {distinct_keys} distinct idempotency keys"
        )
    if baseline_rows != 0 or stored != rows:
        raise AssertionError(f"{mode} bulk: baseline has {stored} rows, {baseline_rows} in outbox")
    return BulkResult(
        mode=mode,
        rows=rows,
        captured_s=captured_s,
        baseline_s=baseline_s,
        outbox_rows=outbox_rows,
        distinct_keys=distinct_keys,
    )


def run(
    *,
    n: int = DEFAULT_N,
    warmup: int = DEFAULT_WARMUP,
    block: int = DEFAULT_BLOCK,
    bulk_rows: int = DEFAULT_BULK_N,
    base_dir: Path | None = None,
    quiet: bool = True,
) -> BenchResult:
    """The whole benchmark, in a temporary directory under ``base_dir``."""
    if n < 1 or warmup < 0 or block < 1 or bulk_rows < 1:
        raise ValueError("n, block and bulk_rows must be >= 1, warmup >= 0")
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
        for index, mode in enumerate(MODES):
            progress(f"bulk, synchronous={mode}", quiet)
            bulk[mode] = run_bulk(folder, mode, rows=bulk_rows, captured_first=index % 2 == 0)
    return BenchResult(
        machine=machine,
        n=n,
        warmup=warmup,
        block=block,
        modes=modes,
        bulk=bulk,
        elapsed_s=time.perf_counter() - started,
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
        f"warm-up of {result.warmup}, captured and baseline interleaved in blocks of "
        f"{result.block}",
        f"- total run time: {result.elapsed_s:.0f} s",
        "",
        "Per-transaction latency (BEGIN IMMEDIATE; INSERT one message; COMMIT), ms:",
        "",
        "| synchronous | captured p50 | captured p99 | captured max "
        "| baseline p50 | baseline p99 | baseline max | ratio p50 | ratio p99 |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for mode in result.modes.values():
        c, b = mode.captured, mode.baseline
        lines.append(
            f"| {mode.mode} | {c.p50_ms:.3f} | {c.p99_ms:.3f} | {c.max_ms:.3f} "
            f"| {b.p50_ms:.3f} | {b.p99_ms:.3f} | {b.max_ms:.3f} "
            f"| {mode.ratio_p50:.2f}x | {mode.ratio_p99:.2f}x |"
        )
    lines += [
        "",
        "Bulk: inserts in one transaction (executemany), captured vs baseline:",
        "",
        "| synchronous | rows | captured s | captured rows/s | baseline s "
        "| baseline rows/s | ratio (time) | outbox rows | distinct keys |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for bulk in result.bulk.values():
        lines.append(
            f"| {bulk.mode} | {bulk.rows:,} | {bulk.captured_s:.2f} "
            f"| {bulk.captured_rows_per_s:,.0f} | {bulk.baseline_s:.2f} "
            f"| {bulk.baseline_rows_per_s:,.0f} | {bulk.ratio:.2f}x "
            f"| {bulk.outbox_rows:,} | {bulk.distinct_keys:,} |"
        )
    lines += ["", "Against the targets:", ""]
    for mode in result.modes.values():
        c = mode.captured
        lines.append(
            f"- spec, {mode.mode}: typical (p50) "
            f"{verdict(c.p50_ms, SPEC_TYPICAL_MS, ' ms', digits=3)}; "
            f"max {verdict(c.max_ms, SPEC_MAX_MS, ' ms', digits=3)}"
        )
    full = result.modes.get("FULL")
    if full is not None:
        lines.append(
            f"- ours, p99 with synchronous=FULL: "
            f"{verdict(full.captured.p99_ms, TARGET_P99_FULL_MS, ' ms', digits=3)}"
        )
    for mode in result.modes.values():
        lines.append(
            f"- ours, capture cost, {mode.mode}: p50 "
            f"{verdict(mode.ratio_p50, TARGET_MAX_RATIO, 'x', digits=3)}; p99 "
            f"{verdict(mode.ratio_p99, TARGET_MAX_RATIO, 'x', digits=3)}"
        )
    for bulk in result.bulk.values():
        lines.append(
            f"- ours, capture cost, bulk {bulk.mode}: "
            f"{verdict(bulk.ratio, TARGET_MAX_RATIO, 'x', digits=3)}"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------- cli ----


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="transactions per side and mode")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    parser.add_argument("--block", type=int, default=DEFAULT_BLOCK, help="interleaving block")
    parser.add_argument("--bulk", type=int, default=DEFAULT_BULK_N, help="rows of the bulk run")
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
        base_dir=args.dir,
        quiet=args.quiet,
    )
    report = to_markdown(result, command)
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
