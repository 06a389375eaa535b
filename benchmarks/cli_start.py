"""Benchmark: how fast the CLI answers, as whole processes (issue 10).

Times ``acode chat add``, ``acode chat list``, ``acode-sync status`` and
``acode-sync queue`` as the console scripts a user runs, each beside
``python -c pass`` measured in the same run: the runs are interleaved (one of
each command per round, in a rotating order), so the noise of a shared
machine falls on all alike. The verdicts are ratios to the median of
``python -c pass``: ``chat add`` <= 3.5x, ``status`` <= 5x. Bytecode is
cached (in the run's temporary directory), as a pip install has it.

Then the queue at scale: a workspace whose outbox holds ``--queue-rows``
(default 1,000,000) open rows and a tenth as many synced today (history, which
``status`` counts), and ``acode-sync queue`` / ``queue --json`` / ``status``
timed on it as whole processes (target for ``queue``: under 200 ms). Beside
them, the floor of any count of the queue: the sqlite3 shell counting the open
rows over the smallest index of them, as a whole process on the same file.

Run::

    python benchmarks/cli_start.py [--runs 20] [--queue-rows 1000000] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"acode chat add": 3.5, "acode-sync status": 5.0}
QUEUE_TARGET_MS = 200.0


# Standalone on purpose (no shared helper module): it runs as is on any checkout.


def progress(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def load_average() -> str:
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def code_version() -> str:
    """The commit measured and whether acode_sync/ or sql/ differ from it."""
    try:
        head = subprocess.run(
            [
                "git",
                "--no-optional-locks",
                "-C",
                str(ROOT),
                "log",
                "-1",
                "--format=%h %ad",
                "--date=format:%Y-%m-%d %H:%M",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "--no-optional-locks",
                "-C",
                str(ROOT),
                "status",
                "--porcelain",
                "--",
                "acode_sync",
                "sql",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes in acode_sync/ or sql/" if dirty else "")


def verdict(value: float, limit: float, unit: str, *, digits: int = 2) -> str:
    shown = f"{value:,.{digits}f}{unit}"
    if value <= limit:
        return f"met ({shown} <= {limit:,g}{unit})"
    return f"**missed** ({shown}, target <= {limit:,g}{unit}: over by {value / limit:.2f}x)"


def emit(report: str, out: Path | None) -> None:
    print(report, end="")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report, encoding="utf-8")


def script(name: str) -> list[str]:
    """The console script next to this interpreter, else the module run by it."""
    path = BIN / name
    if path.exists():
        return [str(path)]
    main = "acode_main" if name == "acode" else "sync_main"
    return [sys.executable, "-c", f"from acode_sync.cli import {main}; {main}()"]


# CPU time (user + system) of one process, in ms, beside its wall time: on a
# shared machine the wall time carries the waits for a core, the CPU time not.
CPU: dict[str, list[float]] = {}


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def run(argv: Sequence[str], env: dict[str, str], label: str | None = None) -> float:
    """Wall time of one process, in ms (its CPU time goes to ``CPU[label]``);
    a failing command stops the benchmark."""
    cpu = child_cpu()
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, check=False)
    elapsed = (time.perf_counter() - start) * 1000
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.decode(errors='replace')}")
    if label is not None:
        CPU.setdefault(label, []).append(child_cpu() - cpu)
    return elapsed


def make_workspace(root: Path, env: dict[str, str]) -> str:
    subprocess.run(
        [*script("acode-sync"), "init"], env=env, cwd=root, check=True, capture_output=True
    )
    made = subprocess.run(
        [*script("acode"), "chat", "new", "benchmark"], env=env, check=True, capture_output=True
    )
    return made.stdout.decode().strip()


def fill_outbox(db: Path, rows: int) -> None:
    """``rows`` open outbox rows (mostly pending, some waiting and failed), made
    set-based in SQL: the queue, not the capture, is measured."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        """
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
        INSERT INTO sync_outbox (idempotency_key, entity_type, entity_id, base_version,
                                 payload, status, retry_count, next_retry_at, last_error,
                                 changed_at)
        SELECT printf('K%025d', i),
               CASE WHEN i % 5 = 0 THEN 'chat' ELSE 'message' END,
               printf('e-%07d', i), 0, '{"title": "x"}',
               CASE WHEN i % 100 = 0 THEN 'Failed' ELSE 'Pending' END,
               CASE WHEN i % 100 = 0 THEN 2 ELSE 0 END,
               CASE WHEN i % 200 = 0 THEN '2030-01-01T00:00:00.000Z' END,
               CASE WHEN i % 100 = 0 THEN 'ACODE-SYNC-001: connection lost' END,
               '2026-12-01T00:00:00.000Z'
        FROM n
        """,
        (rows,),
    )
    # History: synced today, as the mover leaves them (no payload).
    conn.execute(
        """
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
        INSERT INTO sync_outbox (idempotency_key, entity_type, entity_id, base_version,
                                 status, changed_at, synced_at)
        SELECT printf('S%025d', i), 'message', printf('s-%07d', i), 0, 'Synced',
               strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
        FROM n
        """,
        (rows // 10,),
    )
    conn.execute("COMMIT")
    conn.close()


# The floor: counting the open rows at all, over the smallest index that holds
# them (sync_outbox_open, keyed by seq alone), in the sqlite3 shell.
FLOOR_SQL = "SELECT count(*) FROM sync_outbox WHERE status IN ('Pending', 'Failed');"


def median_table(times: dict[str, list[float]], base: str) -> list[str]:
    base_median = statistics.median(times[base])
    lines = [
        "| command | median ms | p90 ms | x `python -c pass` | target | verdict | CPU ms (x) |",
        "|---|--:|--:|--:|--:|---|--:|",
    ]
    for label, samples in times.items():
        ordered = sorted(samples)
        med = statistics.median(ordered)
        p90 = ordered[max(0, int(len(ordered) * 0.9) - 1)]
        ratio = med / base_median
        target = TARGETS.get(label)
        judged = verdict(ratio, target, "x") if target else "-"
        shown_target = f"<= {target:g}x" if target else "-"
        cpu = statistics.median(CPU[label])
        cpu_ratio = cpu / statistics.median(CPU[base])
        lines.append(
            f"| `{label}` | {med:.1f} | {p90:.1f} | {ratio:.2f} | {shown_target} | {judged} "
            f"| {cpu:.1f} ({cpu_ratio:.2f}) |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each command")
    parser.add_argument("--queue-rows", type=int, default=1_000_000, help="0: skip")
    parser.add_argument("--queue-runs", type=int, default=10)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="acode-cli-start-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "ACODE_WORKSPACE": str(root)}
        env.pop("ACODE_SYNC_REMOTE_URL", None)
        # As installed by pip: bytecode compiled once, not on every start (a
        # PYTHONDONTWRITEBYTECODE environment recompiles the package each run).
        # The cache goes to the temporary directory, not into the checkout.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
        chat = make_workspace(root, env)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "acode chat add": [*script("acode"), "chat", "add", chat, "hello"],
            "acode chat list": [*script("acode"), "chat", "list"],
            "acode-sync status": [*script("acode-sync"), "status"],
            "acode-sync queue": [*script("acode-sync"), "queue"],
        }
        times: dict[str, list[float]] = {label: [] for label in commands}
        for label in commands:  # warm the page cache and .pyc files
            run(commands[label], env)
        labels = list(commands)
        for round_ in range(args.runs):
            progress(f"round {round_ + 1}/{args.runs}", args.quiet)
            shift = round_ % len(labels)
            for label in labels[shift:] + labels[:shift]:
                times[label].append(run(commands[label], env, label))

        queue_lines: list[str] = []
        if args.queue_rows:
            progress(f"filling the outbox with {args.queue_rows:,} rows", args.quiet)
            fill_outbox(root / ".agent" / "workspace.db", args.queue_rows)
            big = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "acode-sync queue": [*script("acode-sync"), "queue"],
                "acode-sync queue --json": [*script("acode-sync"), "queue", "--json"],
                "acode-sync status": [*script("acode-sync"), "status"],
            }
            shell = shutil.which("sqlite3")
            if shell:
                db = str(root / ".agent" / "workspace.db")
                big["floor: sqlite3 shell, count(*) of the open rows"] = [shell, db, FLOOR_SQL]
            big_times: dict[str, list[float]] = {label: [] for label in big}
            # The first queue after the fill counts every new row and moves the
            # tally's mark past them (local migration 0010): timed on its own.
            first = run(big["acode-sync queue"], env, "big: first queue")
            for label in big:
                run(big[label], env)
            for round_ in range(args.queue_runs):
                progress(f"queue round {round_ + 1}/{args.queue_runs}", args.quiet)
                for label in big:
                    big_times[label].append(run(big[label], env, f"big: {label}"))
            queue_lines = [
                "",
                f"Queue of {args.queue_rows:,} open outbox rows (and {args.queue_rows // 10:,} "
                f"synced today), {args.queue_runs} runs each:",
                "",
                "| command | median ms | max ms | target | verdict | CPU ms |",
                "|---|--:|--:|--:|---|--:|",
            ]
            queue_lines.append(
                f"| `acode-sync queue`, the first after the fill (moves the tally's mark) "
                f"| {first:.0f} | {first:.0f} | - | - "
                f"| {statistics.median(CPU['big: first queue']):.0f} |"
            )
            for label, samples in big_times.items():
                med = statistics.median(samples)
                target = label.startswith("acode-sync queue")
                judged = verdict(med, QUEUE_TARGET_MS, " ms", digits=0) if target else "-"
                shown = f"< {QUEUE_TARGET_MS:g} ms" if target else "-"
                cpu = statistics.median(CPU[f"big: {label}"])
                queue_lines.append(
                    f"| `{label}` | {med:.0f} | {max(samples):.0f} | {shown} | {judged} "
                    f"| {cpu:.0f} |"
                )

    report = [
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {platform.python_version()} on "
        f"{platform.machine()}, {os.cpu_count()} cores, load {load_average()}; "
        f"code {code_version()}.",
        "",
        f"Whole processes, {args.runs} interleaved runs each:",
        "",
        *median_table(times, "python -c pass"),
        *queue_lines,
        "",
    ]
    emit("\n".join(report), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
