"""Lag benchmark (issue 11): device A's host writes a steady stream while
device B runs its own engine; how long from A's commit to the row on the
server and to the row on B; and what the head check costs the server per
idle device.

    .venv/bin/python benchmarks/lag.py                 # 60 s at 100 messages/s
    .venv/bin/python benchmarks/lag.py --seconds 5     # quick (the smoke test)

Both engines run in this process, each on its own thread (SyncEngine.start),
against a scratch database on the local PostgreSQL; the host writes on the
main thread, one message per local transaction, paced to the rate.

- commit: the wall time right after A's ``add_message`` returned;
- server: the change log's ``logged_at`` of the row (``now()`` of the push's
  transaction, on the same machine's clock);
- on B: when B's engine reported the message new there (its
  EntityStatusChanged event, fired right after the cycle that applied it).

The idle cost: N engines with nothing to do, for a while; the scratch
database's transactions and sessions from ``pg_stat_database`` (one head check
is one transaction), and the CPU of the server backends that lived through
the window (the head checks' connections) from /proc; scaled to 100 devices.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from click.testing import CliRunner
from harness import (
    DEFAULT_ADMIN_URL,
    DEVICE_ROLE,
    emit,
    load_average,
    percentile,
    progress,
    scratch_database,
    with_params,
)
from harness.machine import code_version

from acode_sync import EntityStatusChanged, Event, SyncConfig, SyncEngine, Workspace, store
from acode_sync.cli import sync
from acode_sync.config import parse_config

RATE = 100.0  # messages/s: the specification's NFR-008
SECONDS = 60.0
IDLE_DEVICES = 20
IDLE_SECONDS = 20.0
DRAIN_SECONDS = 120.0
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Lag:
    mode: str
    messages: int
    server_ms: list[float] = field(default_factory=list)
    b_ms: list[float] = field(default_factory=list)

    def row(self) -> str:
        def p(values: list[float], pct: float) -> str:
            return f"{percentile(sorted(values), pct):,.0f}" if values else "n/a"

        return (
            f"| {self.mode} | {self.messages:,} | {p(self.server_ms, 50)} | "
            f"{p(self.server_ms, 99)} | {p(self.server_ms, 100)} | {p(self.b_ms, 50)} | "
            f"{p(self.b_ms, 99)} | {p(self.b_ms, 100)} |"
        )


@dataclass
class Idle:
    mode: str
    devices: int
    seconds: float
    xacts: int
    sessions: int
    backend_cpu_s: float

    def row(self) -> str:
        per100 = 100 / self.devices / self.seconds
        return (
            f"| {self.mode} | {self.devices} | {self.seconds:g} | {self.xacts * per100:,.1f} | "
            f"{self.sessions * per100:,.2f} | {self.backend_cpu_s * per100 * 100:,.2f}% |"
        )


def workspace(root: Path, name: str) -> Workspace:
    folder = root / name
    folder.mkdir()
    result = CliRunner().invoke(sync, ["init", "--workspace", str(folder)])
    if result.exit_code != 0:
        raise RuntimeError(result.output)
    return Workspace(folder)


def config(ws: Workspace, url: str, follow: bool) -> SyncConfig:
    document = {
        "sync": {
            "device_id": ws.config().device_id,
            "remote": {"url": url},
            "follow": {"enabled": follow},
        }
    }
    return parse_config(document, "benchmarks/lag.py")


def run_lag(root: Path, db_url: str, *, follow: bool, seconds: float, rate: float) -> Lag:
    mode = "write-following on" if follow else "default settings"
    url = with_params(db_url, user=DEVICE_ROLE)
    a_ws, b_ws = workspace(root, f"a-{follow}"), workspace(root, f"b-{follow}")
    on_b: dict[str, float] = {}

    def arrived(event: Event) -> None:
        if isinstance(event, EntityStatusChanged) and event.old is None:
            on_b.setdefault(event.entity_id, time.time())

    a = SyncEngine(a_ws, config(a_ws, url, follow))
    b = SyncEngine(b_ws, config(b_ws, url, follow), on_event=arrived)
    committed: dict[str, float] = {}
    with a, b:
        b.sync_now(timeout=60)
        conn = a_ws.connect()
        chat = store.new_chat(conn, f"lag {mode}")
        count = int(seconds * rate)
        start = time.monotonic()
        for i in range(count):
            pause = start + i / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            ident = store.add_message(conn, chat, f"message {i} of a steady stream")
            committed[ident] = time.time()
        conn.close()
        deadline = time.monotonic() + DRAIN_SECONDS + 2 * b.config.download.poll_interval_seconds
        while time.monotonic() < deadline and not set(committed) <= set(on_b):
            time.sleep(0.2)
    result = Lag(mode, len(committed))
    with psycopg.connect(db_url) as admin:
        rows = admin.execute(
            "SELECT entity_id, extract(epoch FROM min(logged_at))::float8 "
            "FROM acode_sync.changes WHERE entity_type = 'message' AND entity_id = ANY(%s) "
            "GROUP BY entity_id",
            (list(committed),),
        ).fetchall()
    logged = {str(ident): float(at) for ident, at in rows}
    for ident, at in committed.items():
        if ident in logged:
            result.server_ms.append(max(0.0, logged[ident] - at) * 1000)
        if ident in on_b:
            result.b_ms.append((on_b[ident] - at) * 1000)
    return result


def stats(admin: psycopg.Connection[Any], dbname: str) -> tuple[int, int, dict[int, float]]:
    admin.execute("SELECT pg_stat_clear_snapshot()")
    row = admin.execute(
        "SELECT xact_commit + xact_rollback, sessions FROM pg_stat_database WHERE datname = %s",
        (dbname,),
    ).fetchone()
    assert row is not None
    pids = [
        int(r[0])
        for r in admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )
    ]
    return int(row[0]), int(row[1]), {pid: cpu_seconds(pid) for pid in pids}


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def run_idle(root: Path, db_url: str, *, follow: bool, devices: int, seconds: float) -> Idle:
    mode = "write-following on" if follow else "default settings"
    url = with_params(db_url, user=DEVICE_ROLE)
    dbname = str(psycopg.conninfo.conninfo_to_dict(db_url)["dbname"])
    engines = []
    for i in range(devices):
        ws = workspace(root, f"idle-{follow}-{i}")
        engines.append(SyncEngine(ws, config(ws, url, follow)))
    for engine in engines:
        engine.start()
        engine.sync_now(timeout=60)
    time.sleep(2)  # every engine past its first head check: its connection is open
    with psycopg.connect(db_url, autocommit=True) as admin:
        x0, s0, cpu0 = stats(admin, dbname)
        time.sleep(seconds)
        x1, s1, cpu1 = stats(admin, dbname)
    stopping = [threading.Thread(target=e.stop, args=(30,)) for e in engines]
    for thread in stopping:
        thread.start()
    for thread in stopping:
        thread.join()
    lived = sum(cpu1[pid] - cpu0[pid] for pid in cpu0.keys() & cpu1.keys())
    return Idle(mode, devices, seconds, x1 - x0 - 2, s1 - s0, lived)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=SECONDS, help="how long A writes")
    parser.add_argument("--rate", type=float, default=RATE, help="messages/s A's host writes")
    parser.add_argument("--idle-devices", type=int, default=IDLE_DEVICES)
    parser.add_argument("--idle-seconds", type=float, default=IDLE_SECONDS)
    parser.add_argument("--quick", action="store_true", help="5 s, 4 idle devices for 5 s")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="an admin (superuser)")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.idle_devices, args.idle_seconds = 5.0, 4, 5.0
    lines = [
        f"Code: {code_version()}; load at start: {load_average()}; "
        f"{os.cpu_count()} cores; `{' '.join(['benchmarks/lag.py', *sys.argv[1:]])}`",
        "",
        f"A writes {args.rate:g} messages/s for {args.seconds:g} s; lag in ms from A's commit.",
        "",
        "| settings | messages | server p50 | server p99 | server max | B p50 | B p99 | B max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    idle_lines = [
        "",
        f"Idle devices ({args.idle_devices} for {args.idle_seconds:g} s), per 100 devices:",
        "",
        "| settings | devices | seconds | transactions/s | sessions/s | CPU of lived backends |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    name = f"acode_bench_lag_{os.getpid()}"
    with (
        tempfile.TemporaryDirectory(prefix="acode-bench-lag-") as tmp,
        scratch_database(args.admin_url, name) as db_url,
    ):
        for follow in (False, True):
            progress(f"lag, follow={follow}", args.quiet)
            lag = run_lag(Path(tmp), db_url, follow=follow, seconds=args.seconds, rate=args.rate)
            lines.append(lag.row())
        for follow in (False, True):
            progress(f"idle, follow={follow}", args.quiet)
            idle = run_idle(
                Path(tmp),
                db_url,
                follow=follow,
                devices=args.idle_devices,
                seconds=args.idle_seconds,
            )
            idle_lines.append(idle.row())
    emit("\n".join([*lines, *idle_lines]) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
