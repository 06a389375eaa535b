"""The fleet: N devices (separate processes) across M = N/5 owners, each writing
at a set rate and running the real sync cycle, against PostgreSQL directly and
through PgBouncer in transaction mode (a pool smaller than N); then the
big-server run (benchmarks/fleet_big.py).

    python benchmarks/fleet.py                       # N = 1, 10, 50; both paths; big server
    python benchmarks/fleet.py --sizes 50 --modes pgbouncer --seconds 30 --skip-big
    python benchmarks/fleet.py --skip-fleet --big-rows 1000000   # a quick big-server run

Reports per run: accepted changes/s (change-log rows the server logged per
second of writing), p50/p99 of one push() of a batch and of one pull() page
(as the device measures them: the round trip), errors, server CPU seconds per
1,000 changes (every postgres process, exited backends included), and whether
every device holds exactly what the server holds for its owner.

Needs: a PostgreSQL admin URL (--admin-url, $ACODE_TEST_PG_URL, default
postgresql://postgres@127.0.0.1:5432/postgres) on this machine (CPU is read
from /proc), and pgbouncer (found on PATH or /usr/sbin; installed with apt-get
when run as root) for the pooled runs.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import psycopg
from fleet_device import DeviceResult, run_device
from harness import load_average, percentile, progress
from pgbouncer import PgBouncer, PgBouncerMissing
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from acode_sync.cli import sync
from acode_sync.migrations import migrate_remote

DEFAULT_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE = f"acode_fleet_{os.getpid()}"  # one per run: runs never collide
ROLE = f"acode_fleet_{os.getpid()}_o{{}}"  # login roles are cluster-wide: one set per run
DEVICES_PER_OWNER = 5


class BackendCpu:
    """CPU of the server processes that serve one database, sampled from /proc
    (their title names the database) every 50 ms in a thread: a backend's last
    sample stands for it after it exits, so short-lived backends (a direct
    connection per cycle) are slightly undercounted. Other databases on the
    same cluster (other test runs) are left out, as are shared processes."""

    def __init__(self, dbname: str) -> None:
        self.tag = f" {dbname} "
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self.stop.wait(0.05):
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    title = (
                        (entry / "cmdline")
                        .read_bytes()
                        .replace(b"\0", b" ")
                        .decode(errors="replace")
                    )
                    if not title.startswith("postgres:") or self.tag not in title:
                        continue
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                fields = stat[stat.rindex(")") + 2 :].split()
                key = f"{entry.name}:{fields[19]}"  # pid and start time
                self.seen[key] = (int(fields[11]) + int(fields[12])) / tick

    def __enter__(self) -> BackendCpu:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def seconds(self) -> float:
        return sum(self.seen.values())


def postgres_cpu_seconds() -> float:
    """CPU of every postgres process of the cluster: the live ones, plus what the
    postmaster collected from backends that exited (cutime/cstime)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        if comm not in ("postgres", "postmaster"):
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
        # cutime/cstime: children that exited (the postmaster's: closed backends)
        total += utime + stime + cutime + cstime
    return total / tick


def url_for(admin: str, **changes: Any) -> str:
    params = conninfo_to_dict(admin)
    params.update(changes)
    if "user" in changes:
        params.pop("password", None)
    return make_conninfo("", **params)


def fresh_database(admin: str, owners: int) -> str:
    """A new database with the server schema and ``owners`` enrolled roles."""
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    db_url = url_for(admin, dbname=DATABASE)
    migrate_remote(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        for i in range(owners):
            role = ROLE.format(i)
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            conn.execute(sql.SQL("GRANT acode_sync_device TO {}").format(sql.Identifier(role)))
    return db_url


def drop_database(admin: str, dbname: str, roles: Sequence[str] = ()) -> None:
    """Drop the run's database, then its login roles (cluster-wide; they own
    nothing once the database is gone), so a run leaves the server as it found it."""
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )
        for role in roles:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def logged(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM acode_sync.changes").fetchone()
        return int(row[0]) if row else 0


def server_digests(db_url: str, owners: list[str]) -> dict[str, tuple[str, int]]:
    import hashlib

    out = {}
    with psycopg.connect(db_url) as conn:
        for owner in owners:
            rows = conn.execute(
                "SELECT 'c' || id COLLATE \"C\" AS k, title, version FROM acode_sync.chats "
                "WHERE owner_id = %s UNION ALL SELECT 'm' || id, content, version "
                "FROM acode_sync.messages WHERE owner_id = %s ORDER BY 1",
                (owner, owner),
            ).fetchall()
            out[owner] = (hashlib.sha256(repr(rows).encode()).hexdigest(), len(rows))
    return out


@dataclass(frozen=True)
class FleetServer:
    """A run's database, its owners' roles, and its PgBouncer (or None: direct)."""

    db_url: str
    roles: list[str]
    bouncer: PgBouncer | None

    def url(self, owner: str) -> str:
        """Where ``owner``'s devices connect: through the pooler, or directly."""
        if self.bouncer:
            return self.bouncer.url(owner, DATABASE)
        return url_for(self.db_url, user=owner)


@contextmanager
def fleet_server(args: argparse.Namespace, n: int, mode: str) -> Iterator[FleetServer]:
    """A fresh database for N devices (M = N/5 owners), behind a private
    PgBouncer in transaction mode when ``mode`` is 'pgbouncer'; dropped after,
    with its roles."""
    owners = max(1, n // DEVICES_PER_OWNER)
    db_url = fresh_database(args.admin_url, owners)
    roles = [ROLE.format(i) for i in range(owners)]
    bouncer = None
    try:
        if mode == "pgbouncer":
            params = conninfo_to_dict(db_url)
            host, port = str(params.get("host", "127.0.0.1")), int(str(params.get("port", 5432)))
            bouncer = PgBouncer(host, port, roles, pool_size=args.pool, install=True)
            bouncer.start()
        yield FleetServer(db_url, roles, bouncer)
    finally:
        if bouncer:
            bouncer.stop()
        drop_database(args.admin_url, DATABASE, roles)


def run_fleet(args: argparse.Namespace, n: int, mode: str) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="acode-fleet-", ignore_cleanup_errors=True) as tmp,
        fleet_server(args, n, mode) as server,
    ):
        root = Path(tmp)
        db_url, roles, bouncer = server.db_url, server.roles, server.bouncer
        owners = len(roles)
        ctx = mp.get_context("fork")
        start, pushed = ctx.Barrier(n + 1), ctx.Barrier(n)
        results: Any = ctx.Queue()
        procs = []
        for d in range(n):
            owner = roles[d % owners]
            url = server.url(owner)
            folder = root / f"device-{d}"
            folder.mkdir()
            with redirect_stdout(StringIO()):
                sync.main(
                    ["init", "--workspace", str(folder), "--remote", url], standalone_mode=False
                )
            procs.append(
                ctx.Process(
                    target=run_device,
                    args=(
                        folder,
                        f"device-{d}",
                        owner,
                        args.rate,
                        args.seconds,
                        args.batch,
                        start,
                        pushed,
                        results,
                    ),
                )
            )
        for p in procs:
            p.start()
        before_rows, before_cpu = logged(db_url), postgres_cpu_seconds()
        sampler = BackendCpu(DATABASE).__enter__()
        start.wait(300)
        t0 = time.monotonic()
        time.sleep(args.seconds)
        during_rows = logged(db_url) - before_rows
        elapsed = time.monotonic() - t0
        done: list[DeviceResult] = [results.get(timeout=600) for _ in procs]
        for p in procs:
            p.join(60)
        sampler.__exit__()
        cpu = postgres_cpu_seconds() - before_cpu
        total_rows = logged(db_url) - before_rows
        expected = server_digests(db_url, roles)
    push = sorted(x for r in done for x in r.push_ms)
    pull = sorted(x for r in done for x in r.pull_ms)
    items = [x for r in done for x in r.push_items]
    errors = [e for r in done for e in r.errors]
    converged = sum(1 for r in done if (r.digest, r.rows) == expected[r.owner])
    return {
        "mode": mode,
        "n": n,
        "m": owners,
        "pool": f"{args.pool}/owner" if bouncer else "-",
        "written": sum(r.written for r in done),
        "accepted_per_s": during_rows / elapsed,
        "push_p50": percentile(push, 50) if push else 0.0,
        "push_p99": percentile(push, 99) if push else 0.0,
        "items": sum(items) / len(items) if items else 0.0,
        "pull_p50": percentile(pull, 50) if pull else 0.0,
        "pull_p99": percentile(pull, 99) if pull else 0.0,
        "errors": len(errors),
        "first_error": errors[0].splitlines()[-1] if errors else "",
        "cpu_per_1000": sampler.seconds / total_rows * 1000 if total_rows else 0.0,
        "device_cpu_per_1000": sum(r.cpu_s for r in done) / during_rows * 1000
        if during_rows
        else 0.0,
        "cluster_cpu_per_1000": cpu / total_rows * 1000 if total_rows else 0.0,
        "converged": f"{converged}/{n}",
    }


def fleet_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| path | N | M | pool | accepted/s | push p50 / p99 ms (items) | "
        "pull page p50 / p99 ms | errors | server CPU s / 1k changes (cluster) | "
        "device CPU s / 1k | converged |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['n']} | {r['m']} | {r['pool']} | {r['accepted_per_s']:.0f} | "
            f"{r['push_p50']:.1f} / {r['push_p99']:.1f} ({r['items']:.0f}) | "
            f"{r['pull_p50']:.1f} / {r['pull_p99']:.1f} | {r['errors']} | "
            f"{r['cpu_per_1000']:.3f} ({r['cluster_cpu_per_1000']:.2f}) | "
            f"{r['device_cpu_per_1000']:.2f} | {r['converged']} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-url", default=os.environ.get("ACODE_TEST_PG_URL") or DEFAULT_ADMIN)
    parser.add_argument("--sizes", default="1,10,50", help="device counts N (default 1,10,50)")
    parser.add_argument("--modes", default="direct,pgbouncer")
    parser.add_argument(
        "--rate",
        type=float,
        default=40.0,
        help="changes/s each device writes (default 40: 2,000/s at N=50)",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="writing time per run")
    parser.add_argument("--batch", type=int, default=50, help="sync when this many wait")
    parser.add_argument(
        "--pool", type=int, default=2, help="PgBouncer server connections per owner (default 2)"
    )
    parser.add_argument(
        "--wire",
        action="store_true",
        help="also run each size's calls from one driver process (fleet_wire.py): the floor",
    )
    parser.add_argument("--skip-fleet", action="store_true")
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--big-rows", type=int, default=10_000_000)
    parser.add_argument("--big-owners", type=int, default=1000)
    parser.add_argument(
        "--stale-stats",
        action="store_true",
        help="big server: no ANALYZE after the measured owner writes (statistics unaware of it)",
    )
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"# fleet benchmark (load before: {load_average()}, {os.cpu_count()} cores)\n")
    status = 0
    if not args.skip_fleet:
        rows = []
        for mode in args.modes.split(","):
            for n in (int(s) for s in args.sizes.split(",")):
                progress(f"fleet: {mode}, N={n}", args.quiet)
                try:
                    rows.append(run_fleet(args, n, mode))
                except PgBouncerMissing as exc:
                    print(f"{mode}: skipped: {exc}", file=sys.stderr)
                    status = 2
                    break
        print(fleet_table(rows))
        if args.wire:
            from fleet_wire import run_wire, wire_table

            wired = []
            for mode in args.modes.split(","):
                for n in (int(s) for s in args.sizes.split(",")):
                    progress(f"wire (one driver process): {mode}, N={n}", args.quiet)
                    wired.append(run_wire(args, n, mode))
            print("\n" + wire_table(wired))
            rows += wired
        for r in rows:
            if r["first_error"]:
                print(f"\n{r['mode']} N={r['n']}: first error: {r['first_error']}")
    if not args.skip_big:
        from fleet_big import run_big

        progress(f"big server: {args.big_rows} changes, {args.big_owners} owners", args.quiet)
        print(
            "\n"
            + run_big(
                args.admin_url, args.big_rows, args.big_owners, args.quiet, not args.stale_stats
            )
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
