"""Benchmark: the upload's planning of a round (``Uploader._plan``: claim,
checks, privacy, batch, wire JSON), two versions of the code interleaved.

One workspace file, made once: a chat and ``--rows`` messages (~600 bytes of
content, as the other benchmarks) captured by the triggers. The reference is
the package as it was at ``--reference`` (a git revision, exported with
``git archive`` into a scratch folder), the other the package of this
checkout. Round after round each side, in a child process of its own (so each
imports its own code), plans the head of the queue ``--calls`` times at each
batch size and reports the median per call; the order of the two sides swaps
every round, so a busy machine weighs on both alike. Planning the head writes
nothing when every row is fit, so every call plans the same rows.

Run::

    python benchmarks/plan_ab.py [--reference REV] [--rows N] [--rounds N] [--calls N]
        [--batch 1000 --batch 50] [--out FILE]

With ``--callgrind CALLS`` each side instead plans CALLS times under
valgrind's callgrind, once per batch size, and the instructions per round
are reported (a child that only warms up counted off): a figure the other
work on the machine does not move.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONTENT = ("benchmark content " * 17)[:300] * 2  # ~600 bytes, as now.py


def export(revision: str, folder: Path) -> Path:
    """The package at ``revision`` as a folder to put first on PYTHONPATH, its
    SQL inside it as a wheel has it (``acode_sync/sql``)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "acode_sync", "sql"],
        capture_output=True,
        check=True,
    ).stdout
    folder.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    shutil.copytree(folder / "sql", folder / "acode_sync" / "sql")
    return folder


def make_workspace(db: Path, rows: int) -> None:
    from ulid import ULID

    from acode_sync.migrations import migrate_local
    from acode_sync.store import new_chat
    from acode_sync.workspace import connect, write

    conn = connect(db)
    migrate_local(conn)
    chat_id = new_chat(conn, "benchmark")
    with write(conn):
        conn.executemany(
            "INSERT INTO messages (id, chat_id, role, content) VALUES (?, ?, 'user', ?)",
            ((str(ULID()), chat_id, CONTENT) for _ in range(rows)),
        )
    conn.close()


def child(db: Path, batches: list[int], calls: int) -> dict[str, Any]:
    """Plan the head ``calls`` times per batch size with the code on the path."""
    import acode_sync
    from acode_sync.config import parse_config
    from acode_sync.rounds import PushReport
    from acode_sync.upload import Uploader
    from acode_sync.workspace import connect

    conn = connect(db)
    medians = {}
    for batch in batches:
        config = parse_config(
            {
                "sync": {
                    "device_id": "bench",
                    "upload": {"batch_size": batch, "batch_bytes_max": 16 * 1_048_576},
                }
            },
            "bench",
        )
        mover = Uploader(conn, config, "bench")
        planned = mover._plan(0, PushReport(), False)  # warm: statements, imports
        assert planned is not None and len(planned.items) == batch, "every row fit"
        samples = []
        for _ in range(calls):
            start = time.perf_counter()
            mover._plan(0, PushReport(), False)
            samples.append(time.perf_counter() - start)
        medians[str(batch)] = statistics.median(samples) if samples else 0.0
    conn.close()
    return {"code": str(Path(acode_sync.__file__).parent), "median_s": medians}


def run_side(tree: Path, db: Path, batches: list[int], calls: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{HERE}"}
    args = [sys.executable, __file__, "--child", str(db), "--calls", str(calls)]
    for batch in batches:
        args += ["--batch", str(batch)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({tree}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    if Path(result["code"]) != tree / "acode_sync":
        raise RuntimeError(f"child ran {result['code']}, not {tree}")
    return result


def instructions(tree: Path, db: Path, batch: int, calls: int) -> float:
    """Instructions per planning of one round (valgrind's callgrind, which a
    busy machine does not move): a child that plans ``calls`` times less one
    that only warms up, over ``calls``."""
    counted = []
    valgrind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    for n in (calls, 0):
        child_args = ["--child", str(db), "--calls", str(n), "--batch", str(batch)]
        done = subprocess.run(
            [*valgrind, sys.executable, __file__, *child_args],
            env={**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{HERE}"},
            capture_output=True,
            text=True,
            check=False,
        )
        found = re.search(r"Collected : (\d+)", done.stderr)
        if done.returncode != 0 or found is None:
            raise RuntimeError(f"callgrind child failed ({tree}):\n{done.stderr[-2000:]}")
        counted.append(int(found.group(1)))
    return (counted[0] - counted[1]) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", default="HEAD", help="git revision of the reference")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--batch", type=int, action="append")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--callgrind", type=int, metavar="CALLS", help="count instructions instead (valgrind)"
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    batches = args.batch or [1000, 50]
    if args.child is not None:
        print(json.dumps(child(args.child, batches, args.calls)))
        return
    if max(batches) > args.rows:
        parser.error("--rows must be at least the largest --batch")
    if args.callgrind:
        report = count(args.reference, args.rows, batches, args.callgrind)
    else:
        report = run(args.reference, args.rows, batches, args.rounds, args.calls)
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")


def run(reference: str, rows: int, batches: list[int], rounds: int, calls: int) -> dict[str, Any]:
    """Both sides, ``rounds`` times each, alternating; the summary."""
    with tempfile.TemporaryDirectory(prefix="plan-ab-") as scratch:
        folder = Path(scratch)
        sides = {"reference": export(reference, folder / "reference"), "current": ROOT}
        db = folder / "workspace.db"
        make_workspace(db, rows)
        samples: dict[str, dict[str, list[float]]] = {
            side: {str(b): [] for b in batches} for side in sides
        }
        order = list(sides)
        for number in range(rounds):
            for side in order:
                found = run_side(sides[side], db, batches, calls)
                for batch, seconds in found["median_s"].items():
                    samples[side][batch].append(seconds)
            order.reverse()
            print(f"round {number + 1}/{rounds}", file=sys.stderr)
    return summarise(reference, rows, calls, batches, samples)


def count(reference: str, rows: int, batches: list[int], calls: int) -> dict[str, Any]:
    """Instructions per round planned, each side and batch size."""
    with tempfile.TemporaryDirectory(prefix="plan-ab-") as scratch:
        folder = Path(scratch)
        sides = {"reference": export(reference, folder / "reference"), "current": ROOT}
        db = folder / "workspace.db"
        make_workspace(db, rows)
        report: dict[str, Any] = {"reference": reference, "rows": rows, "calls": calls}
        for batch in batches:
            per = {side: instructions(tree, db, batch, calls) for side, tree in sides.items()}
            report[f"batch {batch}"] = {
                "reference_instructions_per_round": round(per["reference"]),
                "current_instructions_per_round": round(per["current"]),
                "current_over_reference": round(per["current"] / per["reference"], 3),
            }
            print(f"batch {batch}: {report[f'batch {batch}']}", file=sys.stderr)
    return report


def summarise(
    reference: str,
    rows: int,
    calls: int,
    batches: list[int],
    samples: dict[str, dict[str, list[float]]],
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "reference": subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", reference],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip(),
        "rows": rows,
        "rounds": len(samples["reference"][str(batches[0])]),
        "calls_per_round": calls,
        "load_average": os.getloadavg(),
        "batches": {},
    }
    for batch in map(str, batches):
        entry: dict[str, Any] = {}
        for side, by_batch in samples.items():
            values = sorted(by_batch[batch])
            entry[side] = {
                "median_ms": round(statistics.median(values) * 1000, 3),
                "range_ms": [round(values[0] * 1000, 3), round(values[-1] * 1000, 3)],
                "per_100k_rows_s": round(statistics.median(values) * 100_000 / int(batch), 3),
            }
        ratios = sorted(
            new / old
            for old, new in zip(samples["reference"][batch], samples["current"][batch], strict=True)
        )
        entry["current_over_reference"] = {
            "median": round(statistics.median(ratios), 3),
            "range": [round(ratios[0], 3), round(ratios[-1], 3)],
        }
        report["batches"][batch] = entry
    return report


if __name__ == "__main__":
    main()
