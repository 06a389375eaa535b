"""Benchmark: the download path (``Puller.pull``: fetch, inbox, apply), beside a raw
SQLite insert in the same run, and the cost of conflict detection.

Everything runs against a scratch database (``acode_bench_pull_<pid>``) created
as the admin role, migrated with ``migrate_remote`` and dropped at the end
whatever happens; devices log in as ``acode_bench_device``, a login role granted
``acode_sync_device`` (both from ``benchmarks/harness``).

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
    in the same run: ``pull_page`` (server round trip and fetch) and the apply
    of each stored slice (``_apply_pending``) are timed by wrapping them (a
    ``perf_counter`` pair per call, nothing else changed); the next page is
    fetched while one is stored and applied, so the two overlap.
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
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from _pull_apply import run_pull
from _pull_detect import run_detection, run_resolve, run_winner
from _pull_fill import READER_ID, Row, check_server, fill_server, reader_config, settle_server
from _pull_push_check import run_push_check
from _pull_results import PullBenchResult, PullProfile, to_markdown
from harness import (
    DEFAULT_ADMIN_URL,
    DEVICE_ROLE,
    MEMORY_FILESYSTEMS,
    Phase,
    describe_machine,
    emit,
    fresh_local,
    load_average,
    progress,
    read_profile,
    scratch_database,
    with_params,
)

from acode_sync.download import Puller
from acode_sync.engine import connect_remote

DEFAULT_ROWS = 100_000
DEFAULT_PAGE_SIZE = 1000
DETECT_PAGE = 1000
DETECT_OPEN = 10_000
DETECT_REPEATS = 5
SINGLE_REPEATS = 20
RESOLVE_ITEMS = 200
WINNER_CALLS = 20_000
WINNER_RUNS = 5
PUSH_BATCH = 1000
PUSH_REPEATS = 5
PULL_PHASES: tuple[Phase, ...] = (
    ("pull_page: server round trip + fetch", "pull_page", "remote.py"),
    ("apply of each stored slice (guarded)", "_apply_pending", "download.py"),
)


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
            machine=describe_machine(db_dir=folder, admin_url=admin_url),
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
    phases, entries = read_profile(path, PULL_PHASES, top)
    return PullProfile(wall_s=wall, phases=phases, top=entries)


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
