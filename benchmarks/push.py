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
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from _push_batch import run_batch_latency
from _push_drain import child_drain, run_drains, run_profiles
from _push_results import PushBenchResult, to_markdown
from harness import (
    DEFAULT_ADMIN_URL,
    describe_machine,
    emit,
    load_average,
    progress,
    scratch_database,
)

DEFAULT_ROWS = 100_000
DEFAULT_REPEATS = 30
DEFAULT_WARMUP = 3


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
        machine=describe_machine(admin_url=admin_url),
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
