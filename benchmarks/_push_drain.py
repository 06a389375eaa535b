"""(b) Draining a backlog, each drain in its own child process (which also gives
(c), its own peak RSS), beside the raw COPY and the floor of the same rows; and
the cProfile runs of ``--profile``."""

from __future__ import annotations

import cProfile
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psycopg
from _push_backlog import (
    BYTES_MAX,
    DEVICE_ID,
    DRAIN_BATCHES,
    check_local_all_synced,
    check_report,
    copy_source,
    open_local,
    server_counts,
    sync_config,
    write_messages,
)
from _push_results import DrainProfile, DrainResult
from harness import (
    COPY_TABLE,
    DEVICE_ROLE,
    Phase,
    copy_rows,
    floor_rows,
    progress,
    read_profile,
    reset_server,
    with_params,
)

from acode_sync import upload
from acode_sync.engine import connect_remote
from acode_sync.remote import Pushed, push_batch
from acode_sync.upload import PushReport, Uploader
from acode_sync.workspace import connect

# The script a drain runs in, as a child process (its hidden --child-drain).
SCRIPT = Path(__file__).with_name("push.py")
CLIENT_PHASES: tuple[Phase, ...] = (
    ("claim due rows (SELECT, OutboxRow)", "claim_due", "claim.py"),
    ("privacy re-check", "_prepare", "upload.py"),
    ("JSON of the batch", "wire_items", "rounds.py"),
    # push_batch runs on the uploader's worker thread, which cProfile does not see:
    # what the main thread waits for is the round trip less what overlaps it.
    ("waiting for the round trip (not overlapped)", "_answer", "upload.py"),
    ("mark results (local transaction)", "_mark_results", "upload.py"),
    ("coalesce + take_batch", "coalesce", "batching.py"),
)


def peak_rss_kb() -> int:
    """Peak resident set size of this process so far, in KiB.

    ``VmHWM`` of /proc/self/status where there is one: ``ru_maxrss`` survives
    exec on Linux, so a child started by a parent that holds a lot of memory
    (here: the 100k COPY rows) would report the parent's peak, not its own.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def function_stats(db_url: str, want_calls: int) -> tuple[float | None, float | None, int | None]:
    """(ms in push(), ms in log_changes(), push() calls); stats arrive shortly after
    the device's backend exits, so wait for them a little."""
    deadline = time.monotonic() + 5.0
    found: dict[str, tuple[int, float]] = {}
    with psycopg.connect(db_url, autocommit=True) as conn:
        while True:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            found = {
                name: (int(calls), float(total))
                for name, calls, total in conn.execute(
                    "SELECT funcname, calls, total_time FROM pg_stat_user_functions "
                    "WHERE schemaname = 'acode_sync'"
                )
            }
            calls = found.get("push", (0, 0.0))[0]
            if calls >= want_calls or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    if "push" not in found:
        return None, None, None
    log_ms = found["log_changes"][1] if "log_changes" in found else None
    return found["push"][1], log_ms, found["push"][0]


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one drain in a fresh Python process; its JSON answer."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--child-drain", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"drain child failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def child_drain(spec: dict[str, Any]) -> dict[str, Any]:
    """In the child: open everything, note the RSS, drain, note the RSS again.

    Every round trip (``push_batch``) is timed on the way, to split the drain
    into server + network and local work, and to see whether a batch costs more
    as the server's tables grow."""
    trips: list[float] = []
    send = push_batch

    def timed_push_batch(
        conn: psycopg.Connection[Any], batch_id: str, device_id: str, items_json: str
    ) -> Pushed:
        start = time.perf_counter()
        try:
            return send(conn, batch_id, device_id, items_json)
        finally:
            trips.append(time.perf_counter() - start)

    # The uploader calls push_batch through its module's namespace.
    upload.push_batch = timed_push_batch  # type: ignore[attr-defined]
    conn = connect(spec["db"])
    uploader = Uploader(
        conn,
        sync_config(spec["batch_size"], spec["batch_bytes_max"]),
        DEVICE_ID,
        conflicts_dir=Path(spec["db"]).parent / "conflicts",
    )
    remote = connect_remote(spec["url"])
    try:
        remote.execute("SELECT 1")
        conn.execute("SELECT 1 FROM sync_outbox LIMIT 1").fetchone()
        rss_ready = peak_rss_kb()
        profiler = cProfile.Profile() if spec.get("profile") else None
        start = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        report = uploader.push(remote)
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - start
        rss_peak = peak_rss_kb()
        if profiler is not None:
            profiler.dump_stats(spec["profile"])
    finally:
        remote.close()
        conn.close()
    full = trips[:-1] if len(trips) > 1 else trips
    tenth = max(1, len(full) // 10)
    return {
        "seconds": seconds,
        "rss_ready_kb": rss_ready,
        "rss_peak_kb": rss_peak,
        "report": asdict(report),
        "round_trips_s": sum(trips),
        "first_batches_ms": statistics.fmean(full[:tenth]) * 1e3 if full else 0.0,
        "last_batches_ms": statistics.fmean(full[-tenth:]) * 1e3 if full else 0.0,
    }


def prepare_backlog(path: Path, rows: int) -> list[tuple[Any, ...]]:
    """A fresh local database with one chat and ``rows`` messages pending; the
    same rows as COPY rows for the baseline."""
    conn, chat_id = open_local(path)
    try:
        write_messages(conn, chat_id, rows)
        pending = conn.execute(
            "SELECT count(*) FROM sync_outbox WHERE status = 'Pending'"
        ).fetchone()[0]
        if pending != rows + 1:
            raise AssertionError(f"{path}: {pending} pending outbox rows, want {rows + 1}")
        source = copy_source(conn)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return source


def timed_copy(db_url: str, rows: Sequence[tuple[Any, ...]]) -> float:
    """A raw COPY of ``rows`` into the emptied baseline table, as the device role."""
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(f"TRUNCATE {COPY_TABLE}")
        admin.execute("CHECKPOINT")
    with connect_remote(with_params(db_url, user=DEVICE_ROLE)) as conn:
        conn.execute("SELECT 1")
        seconds = copy_rows(conn, rows)
        got = conn.execute(f"SELECT count(*) FROM {COPY_TABLE}").fetchone()
    if not got or got[0] != len(rows):
        raise AssertionError(f"COPY baseline: {got} rows stored, want {len(rows)}")
    return seconds


def timed_floor(db_url: str, rows: Sequence[tuple[Any, ...]]) -> float:
    """The floor (:func:`floor_rows`) on an emptied server, checked, then emptied again."""
    reset_server(db_url)
    with connect_remote(with_params(db_url, user=DEVICE_ROLE)) as conn:
        seconds = floor_rows(conn, rows, DEVICE_ID)
    counts = server_counts(db_url)
    want = {"messages": len(rows), "chats": 1, "changes": len(rows) + 1, "conflicts": 0}
    if {k: counts[k] for k in want} != want or counts["distinct_keys"] != len(rows) + 1:
        raise AssertionError(f"floor of {len(rows)}: server has {counts}, want {want}")
    reset_server(db_url)
    return seconds


def run_drain(
    folder: Path,
    db_url: str,
    rows: int,
    batch_size: int,
    *,
    profile: Path | None = None,
    copy_before: bool = False,
    copy_after: bool = False,
    floors_before: int = 0,
) -> tuple[dict[str, Any], list[float], list[float]]:
    """One drain of a fresh ``rows`` backlog against an emptied server, checked;
    with raw COPYs of the same rows just before and/or after it, and
    ``floors_before`` samples of the floor before it (not after: the drained
    backlog stays on the server for the next phase)."""
    reset_server(db_url)
    tag = f"{rows}-{batch_size}{'-profile' if profile else ''}"
    path = folder / f"drain-{tag}.db"
    source = prepare_backlog(path, rows)
    copies = []
    floors = [timed_floor(db_url, source) for _ in range(floors_before)]
    if copy_before:
        copies.append(timed_copy(db_url, source))
        reset_server(db_url)
    spec = {
        "db": str(path),
        "url": with_params(db_url, user=DEVICE_ROLE),
        "batch_size": batch_size,
        "batch_bytes_max": BYTES_MAX[batch_size],
        "profile": str(profile) if profile else None,
    }
    answer = run_child(spec)
    report = PushReport(**answer["report"])
    check_report(report, rows + 1, f"drain of {rows} at batch_size {batch_size}")
    want_batches = math.ceil((rows + 1) / batch_size)
    if report.batches != want_batches:
        raise AssertionError(
            f"drain of {rows} at {batch_size}: {report.batches} batches, want {want_batches}"
        )
    counts = server_counts(db_url)
    want = {"messages": rows, "chats": 1, "changes": rows + 1, "conflicts": 0}
    if {k: counts[k] for k in want} != want or counts["distinct_keys"] != rows + 1:
        raise AssertionError(f"drain of {rows} at {batch_size}: server has {counts}, want {want}")
    local = connect(path)
    try:
        check_local_all_synced(local, rows)
    finally:
        local.close()
    path.unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    # The server's function statistics of this drain, before anything else runs.
    answer["server"] = function_stats(db_url, report.batches)
    if copy_after:
        copies.append(timed_copy(db_url, source))
    return answer, copies, floors


def run_drains(
    folder: Path, db_url: str, sizes: Sequence[int], *, quiet: bool
) -> list[DrainResult]:
    """Every size at every batch size; COPY baselines around the drains of a size."""
    results: list[DrainResult] = []
    for rows in sizes:
        pending: list[tuple[int, dict[str, Any]]] = []
        copies: list[float] = []
        floors: list[float] = []
        for index, batch_size in enumerate(DRAIN_BATCHES):
            progress(f"  drain of {rows:,} at batch_size {batch_size}", quiet)
            # COPY samples spread over the drains of this size (before the
            # first, and after each), and as many floor samples (before each).
            answer, samples, floor_samples = run_drain(
                folder,
                db_url,
                rows,
                batch_size,
                copy_before=index == 0,
                copy_after=True,
                floors_before=2 if index == 0 else 1,
            )
            pending.append((batch_size, answer))
            copies += samples
            floors += floor_samples
            progress(
                f"    {answer['seconds']:.1f} s, {rows / answer['seconds']:,.0f} rows/s; "
                f"COPY {', '.join(f'{c:.3f} s' for c in samples)}; "
                f"floor {', '.join(f'{c:.3f} s' for c in floor_samples)}",
                quiet,
            )
        for batch_size, answer in pending:
            push_ms, log_ms, calls = answer["server"]
            results.append(
                DrainResult(
                    rows=rows,
                    batch_size=batch_size,
                    batch_bytes_max=BYTES_MAX[batch_size],
                    seconds=answer["seconds"],
                    batches=answer["report"]["batches"],
                    applied=answer["report"]["applied"],
                    rss_ready_kb=answer["rss_ready_kb"],
                    rss_peak_kb=answer["rss_peak_kb"],
                    server_push_ms=push_ms,
                    server_log_ms=log_ms,
                    server_push_calls=calls,
                    round_trips_s=answer["round_trips_s"],
                    first_batches_ms=answer["first_batches_ms"],
                    last_batches_ms=answer["last_batches_ms"],
                    copy_seconds=tuple(copies),
                    floor_seconds=tuple(floors),
                )
            )
    return results


def run_profiles(
    folder: Path, db_url: str, rows: int, *, top: int, quiet: bool
) -> list[DrainProfile]:
    profiles = []
    for batch_size in DRAIN_BATCHES:
        progress(f"  profiled drain of {rows:,} at batch_size {batch_size}", quiet)
        stats_path = folder / f"drain-{rows}-{batch_size}.prof"
        answer, _, _ = run_drain(folder, db_url, rows, batch_size, profile=stats_path)
        phases, entries = read_profile(stats_path, CLIENT_PHASES, top)
        profiles.append(
            DrainProfile(
                rows=rows,
                batch_size=batch_size,
                wall_s=answer["seconds"],
                phases=phases,
                top=entries,
            )
        )
    return profiles
