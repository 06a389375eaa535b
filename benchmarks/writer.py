"""The concurrent writer of benchmarks/now.py, as a coding CLI writes: Python
sqlite3, 5 s busy timeout, one INSERT per ``BEGIN IMMEDIATE`` transaction into
a plain table of the workspace, 10 ms apart; each transaction timed.

Run as its own process (``python benchmarks/writer.py DB OUT``): it stops on
SIGTERM and writes its samples to OUT as JSON.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import percentile

PAUSE_S = 0.01
BODY = "x" * 600


@dataclass(frozen=True)
class WriterStats:
    n: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int


def start(db: Path, out: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(db), str(out)])
    deadline = time.monotonic() + 10
    while not out.with_suffix(".ready").exists():  # the table exists, the loop runs
        if time.monotonic() > deadline or proc.poll() is not None:
            raise AssertionError("the writer process did not start")
        time.sleep(0.01)
    return proc


def stop(proc: subprocess.Popen[bytes], out: Path) -> WriterStats:
    proc.send_signal(signal.SIGTERM)
    if proc.wait(timeout=30) != 0:
        raise AssertionError(f"writer exited {proc.returncode}")
    data = json.loads(out.read_text(encoding="utf-8"))
    ordered = sorted(data["samples"])
    if not ordered:
        raise AssertionError("the writer made no transaction")
    return WriterStats(
        n=len(ordered),
        p50_ms=percentile(ordered, 50) * 1e3,
        p99_ms=percentile(ordered, 99) * 1e3,
        max_ms=ordered[-1] * 1e3,
        errors=int(data["errors"]),
    )


def main(db: str, out: str) -> None:
    """The concurrent writer: one INSERT per BEGIN IMMEDIATE transaction, 5 s busy
    timeout, as a coding CLI writes; stops on SIGTERM and writes its samples."""
    stop = False

    def on_term(_sig: int, _frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    conn = sqlite3.connect(db, isolation_level=None, timeout=5.0)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("CREATE TABLE IF NOT EXISTS bench_writer (id INTEGER PRIMARY KEY, body TEXT)")
    Path(out).with_suffix(".ready").touch()
    samples: list[float] = []
    errors = 0
    while not stop:
        start = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO bench_writer (body) VALUES (?)", (BODY,))
            conn.execute("COMMIT")
            samples.append(time.perf_counter() - start)
        except sqlite3.OperationalError:
            errors += 1
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        time.sleep(PAUSE_S)
    conn.close()
    Path(out).write_text(json.dumps({"samples": samples, "errors": errors}), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:3])
