"""Benchmark: the whole ``acode-sync now`` as a user runs it, beside the floor.

On a scratch database (``harness.scratch_database``: created, migrated, dropped at
the end) a workspace is made with the real CLI (``python -m acode_sync init``),
one chat and N messages (~600 bytes of content) are written through the capture
triggers, and ``python -m acode_sync now`` runs as its own process, timed from
start to exit: push of the whole backlog, then the pull and apply that follow.
At batch 1,000 (16 MiB byte limit) and at batch 50 (1 MiB). At batch 1,000
the drain is repeated (``--repeats``, 3 by default), each on a fresh backlog
beside its own floor: one sample of each moves by a third from run to run on
this shared machine, and the verdict is on the median ratio (every ratio shown).

Beside it, in the same run and on the same rows: the floor (``harness.floor_rows``:
the rows INSERTed straight into ``acode_sync.messages`` as the device role, 1,000
per statement), a raw COPY (``harness.copy_rows``), and the server's ``push()``
alone (the outbox rows' wire JSON made beforehand, then one ``acode_sync.push``
call per batch of the run's size, back to back: what no ``now`` can beat at
that batch size), sampled before the sync.

After the batch-1,000 sync: the workspace file (main file + WAL) against a
data-only copy (``VACUUM INTO``, every sync table and trigger dropped, VACUUM);
then again after retention pruning (``retention.days`` made tiny, one more
``now``).

Write locks: a writer process (``benchmarks/writer.py``: Python sqlite3, 5 s
busy timeout, one INSERT per ``BEGIN IMMEDIATE`` transaction into a plain table
of the workspace, 10 ms apart) runs alone for a few seconds (the baseline),
while ``now`` drains the backlog, and while a new device (a second workspace,
same owner) pulls the N changes; its p50/p99/max per transaction. Beside the
last, the floor: the same pull into a third workspace while the writer writes
to a file of its own (WAL too), where it waits for no lock, only for the disk
and the cores the pull shares with it.

Run::

    python benchmarks/now.py [--rows N] [--rows-50 N] [--repeats N] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import _now_push_only as push_only
import _push_backlog as backlog
import _push_drain as drain
import harness
import writer
from _now_report import to_markdown
from harness import emit, load_average, progress
from harness.machine import code_version
from ulid import ULID

from acode_sync.store import new_chat
from acode_sync.workspace import connect, write

CONTENT = harness.CONTENT + " " + harness.CONTENT  # ~600 bytes, as earlier benchmarks
IDLE_WRITER_S = 5.0  # the writer alone first: the machine's own noise, same run
SYNC_TABLES_KEEP = ("chats", "messages")


@dataclass
class SyncRun:
    rows: int
    batch_size: int
    seconds: float  # the whole `now` process, start to exit
    floor_s: float
    copy_s: float
    push_only_s: float = 0.0  # the server's push() alone, same rows and batch size
    pull_seconds: float = 0.0  # a new device's `now`, pulling the rows (batch 1,000 only)
    file_bytes: int = 0  # main file + WAL after the sync
    wal_bytes: int = 0  # of which the WAL
    data_only_bytes: int = 0
    pruned_bytes: int = 0  # main file + WAL after retention pruning
    pruned_wal_bytes: int = 0
    writer_idle: writer.WriterStats | None = None  # the same writer, nothing else on the file
    writer_drain: writer.WriterStats | None = None
    writer_pull: writer.WriterStats | None = None
    # The floor of writer_pull: the same pull, the writer on a file of its own
    # (no lock to wait for; what sharing the disk and the cores costs it).
    writer_other: writer.WriterStats | None = None
    pull_other_seconds: float = 0.0
    ratios: list[float] = field(default_factory=list)  # of each repeat; this run is the median

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    @property
    def floor_rows_per_s(self) -> float:
        return self.rows / self.floor_s

    @property
    def floor_ratio(self) -> float:
        return self.floor_s / self.seconds

    @property
    def push_only_ratio(self) -> float:
        """The server's push() alone against the floor: the most ``now`` could reach."""
        return self.floor_s / self.push_only_s if self.push_only_s else 0.0


@dataclass
class NowBenchResult:
    date: str
    load_at_start: str
    code: str
    runs: list[SyncRun] = field(default_factory=list)
    elapsed_s: float = 0.0


# ------------------------------------------------------------- processes ----


def cli(workspace: Path, *args: str) -> float:
    """``python -m acode_sync ARGS --workspace W`` as a real process; seconds."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "acode_sync", *args, "--workspace", str(workspace)],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise AssertionError(f"acode-sync {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return seconds


def new_workspace(folder: Path, url: str, batch_size: int, retention_days: str = "7") -> Path:
    folder.mkdir(parents=True)
    cli(folder, "init", "--remote", url)
    config = folder / ".agent" / "config.yml"
    text = config.read_text(encoding="utf-8")
    text = text.replace("batch_size: 50", f"batch_size: {batch_size}")
    if batch_size >= 1000:
        text = text.replace("batch_bytes_max: 1048576", f"batch_bytes_max: {16 * 1_048_576}")
    text = text.replace("days: 7", f"days: {retention_days}")
    config.write_text(text, encoding="utf-8")
    return folder


def write_backlog(db: Path, rows: int) -> list[tuple[Any, ...]]:
    """One chat and ``rows`` captured messages; the floor's rows of the same data."""
    conn = connect(db)
    try:
        chat_id = new_chat(conn, "benchmark")
        with write(conn):
            conn.executemany(
                backlog.INSERT_MESSAGE,
                ((str(ULID()), chat_id, "user", CONTENT) for _ in range(rows)),
            )
        return backlog.copy_source(conn)
    finally:
        conn.close()


# --------------------------------------------------------------- measure ----


def db_bytes(db: Path) -> tuple[int, int]:
    """(main file + WAL, WAL): what the workspace holds on disk."""
    wal = db.with_name(db.name + "-wal")
    wal_size = wal.stat().st_size if wal.exists() else 0
    return db.stat().st_size + wal_size, wal_size


def data_only_bytes(db: Path, folder: Path) -> int:
    """A SQLite file holding only the same chats and messages."""
    copy = folder / "data-only.db"
    with sqlite3.connect(db) as conn:
        conn.execute("VACUUM INTO ?", (str(copy),))
    conn = sqlite3.connect(copy, isolation_level=None)
    try:
        for kind in ("trigger", "view", "table"):
            names = conn.execute(
                "SELECT name FROM sqlite_master WHERE type = ? AND name NOT LIKE 'sqlite_%'",
                (kind,),
            ).fetchall()
            for (name,) in names:
                if kind != "table" or name not in SYNC_TABLES_KEEP:
                    conn.execute(f'DROP {kind.upper()} "{name}"')
        conn.execute("VACUUM")
    finally:
        conn.close()
    return copy.stat().st_size


def check_server(db_url: str, rows: int) -> None:
    counts = backlog.server_counts(db_url)
    if (counts["messages"], counts["chats"], counts["conflicts"]) != (rows, 1, 0):
        raise AssertionError(f"server after now: {counts}, want {rows} messages, 1 chat")


def count_local(db: Path, sql: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(sql).fetchone()[0])


def drain_sample(
    folder: Path, db_url: str, rows: int, batch_size: int, *, quiet: bool
) -> tuple[Path, SyncRun]:
    """One backlog in a fresh workspace: the floor, COPY and push() alone of its
    rows, then its ``now`` on an emptied server (which keeps the rows), checked."""
    device_url = harness.with_params(db_url, user=harness.DEVICE_ROLE)
    harness.reset_server(db_url)
    ws = new_workspace(folder, device_url, batch_size)
    db = ws / ".agent" / "workspace.db"
    source = write_backlog(db, rows)
    progress(f"{rows:,} at batch {batch_size}: floor and COPY", quiet)
    floor_s = drain.timed_floor(db_url, source)
    copy_s = drain.timed_copy(db_url, source)
    push_only_s = push_only.timed_push_only(db_url, db, batch_size)
    harness.reset_server(db_url)
    progress(f"{rows:,} at batch {batch_size}: acode-sync now", quiet)
    seconds = cli(ws, "now")
    check_server(db_url, rows)
    backlog.check_local_all_synced(sqlite3.connect(db), rows)
    return ws, SyncRun(rows, batch_size, seconds, floor_s, copy_s, push_only_s)


def sync_run(
    folder: Path,
    db_url: str,
    rows: int,
    batch_size: int,
    *,
    full: bool,
    quiet: bool,
    idle_s: float,
    repeats: int = 1,
) -> SyncRun:
    """``repeats`` drain samples, each beside its own floor; the run is the one
    of median ratio, with every ratio kept. The rest goes on the last one's
    workspace, whose rows the server holds."""
    device_url = harness.with_params(db_url, user=harness.DEVICE_ROLE)
    samples: list[SyncRun] = []
    for repeat in range(repeats):
        place = folder / f"ws-{batch_size}-{repeat}"
        ws, sample = drain_sample(place, db_url, rows, batch_size, quiet=quiet)
        samples.append(sample)
        if repeat < repeats - 1:
            shutil.rmtree(place)
    run = sorted(samples, key=lambda sample: sample.floor_ratio)[len(samples) // 2]
    run = replace(run, ratios=[sample.floor_ratio for sample in samples])
    db = ws / ".agent" / "workspace.db"
    if not full:
        return run
    run.file_bytes, run.wal_bytes = db_bytes(db)
    run.data_only_bytes = data_only_bytes(db, folder)
    config = ws / ".agent" / "config.yml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("days: 7", "days: 0.000001"), encoding="utf-8")
    time.sleep(0.2)
    cli(ws, "now")
    left = count_local(db, "SELECT count(*) FROM sync_outbox")
    if left:
        raise AssertionError(f"after pruning: {left} outbox rows left")
    run.pruned_bytes, run.pruned_wal_bytes = db_bytes(db)

    progress(f"{rows:,}: a new device pulls them, a writer beside it", quiet)
    fresh = new_workspace(folder / "ws-new-device", device_url, batch_size)
    fresh_db = fresh / ".agent" / "workspace.db"
    proc = writer.start(fresh_db, folder / "writer-idle.json")
    time.sleep(idle_s)
    run.writer_idle = writer.stop(proc, folder / "writer-idle.json")
    proc = writer.start(fresh_db, folder / "writer-pull.json")
    try:
        run.pull_seconds = cli(fresh, "now")
    finally:
        run.writer_pull = writer.stop(proc, folder / "writer-pull.json")
    got = count_local(fresh_db, "SELECT count(*) FROM messages")
    if got != rows:
        raise AssertionError(f"new device: {got} messages, want {rows}")

    progress(f"{rows:,}: a new device pulls them, the writer on another file", quiet)
    other = new_workspace(folder / "ws-new-device-2", device_url, batch_size)
    other_db = folder / "writer-other.db"
    with sqlite3.connect(other_db) as conn:
        conn.execute("PRAGMA journal_mode = WAL")  # as the workspace's
    conn.close()
    proc = writer.start(other_db, folder / "writer-other.json")
    try:
        run.pull_other_seconds = cli(other, "now")
    finally:
        run.writer_other = writer.stop(proc, folder / "writer-other.json")
    got = count_local(other / ".agent" / "workspace.db", "SELECT count(*) FROM messages")
    if got != rows:
        raise AssertionError(f"new device (writer elsewhere): {got} messages, want {rows}")

    progress(f"{rows:,} at batch {batch_size}: drain again, a writer beside it", quiet)
    harness.reset_server(db_url)
    again = new_workspace(folder / "ws-writer", device_url, batch_size)
    again_db = again / ".agent" / "workspace.db"
    write_backlog(again_db, rows)
    proc = writer.start(again_db, folder / "writer-drain.json")
    try:
        cli(again, "now")
    finally:
        run.writer_drain = writer.stop(proc, folder / "writer-drain.json")
    check_server(db_url, rows)
    return run


def run(
    *,
    rows: int,
    rows_50: int,
    admin_url: str = harness.DEFAULT_ADMIN_URL,
    base_dir: Path | None = None,
    quiet: bool = False,
    idle_s: float = IDLE_WRITER_S,
    repeats: int = 1,
) -> NowBenchResult:
    started = time.perf_counter()
    result = NowBenchResult(
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        load_at_start=load_average(),
        code=code_version(),
    )
    with (
        tempfile.TemporaryDirectory(prefix="acode-now-", dir=base_dir) as tmp,
        harness.scratch_database(admin_url, f"acode_bench_now_{os.getpid()}") as db_url,
    ):
        folder = Path(tmp)
        result.runs.append(
            sync_run(
                folder, db_url, rows, 1000, full=True, quiet=quiet, idle_s=idle_s, repeats=repeats
            )
        )
        result.runs.append(sync_run(folder, db_url, rows_50, 50, full=False, quiet=quiet, idle_s=0))
    result.elapsed_s = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rows-50", type=int, default=None, help="backlog at batch 50")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 300 rows")
    parser.add_argument(
        "--repeats", type=int, default=3, help="batch-1,000 drains, each beside its own floor"
    )
    parser.add_argument("--idle-writer-s", type=float, default=IDLE_WRITER_S)
    parser.add_argument("--admin-url", default=harness.DEFAULT_ADMIN_URL)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--json", action="store_true", help="also print the raw result")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    rows = 300 if args.quick else args.rows
    rows_50 = args.rows_50 or rows
    idle_s = 0.5 if args.quick else args.idle_writer_s
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    result = run(
        rows=rows,
        rows_50=rows_50,
        admin_url=args.admin_url,
        quiet=args.quiet,
        idle_s=idle_s,
        repeats=1 if args.quick else args.repeats,
    )
    command = "python benchmarks/now.py " + " ".join(argv if argv is not None else sys.argv[1:])
    emit(to_markdown(result, command.strip()), args.out)
    if args.json:
        print(json.dumps(asdict(result), indent=1))


if __name__ == "__main__":
    main()
