"""The big-server run of benchmarks/fleet.py: one device's push of a batch and
pull page on a server pre-filled with ``rows`` changes across ``owners`` owners
(generate_series on the server), beside the same on an empty server, same run.

The measured owner is a new one on both servers, holding the same data (a
chat and 1,000 messages written by a second device), so the only difference
is everybody else's history: the deeper indexes and bigger tables.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import psycopg
from fleet_device import DeviceResult, _timed
from harness import percentile, progress
from psycopg import sql

from acode_sync import remote, store
from acode_sync.cli import sync
from acode_sync.engine import SyncEngine, connect_remote
from acode_sync.migrations import migrate_remote
from acode_sync.workspace import Workspace

PROBE = f"acode_fleet_probe_{os.getpid()}"  # cluster-wide: one per run
ENTITIES = 100  # per pre-filled owner: one chat, 99 messages
SAMPLES = 30


def create(admin: str, dbname: str) -> str:
    from fleet import url_for

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (PROBE,)).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(PROBE)))
    url = url_for(admin, dbname=dbname)
    migrate_remote(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT acode_sync_device TO {}").format(sql.Identifier(PROBE)))
    return url


def fill(url: str, rows: int, owners: int) -> float:
    """``rows`` changes over ``owners`` owners x 100 entities, as the triggers
    would have logged them (triggers off for the bulk load: an admin's restore)."""
    per_owner = max(ENTITIES, rows // owners)
    t0 = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "INSERT INTO acode_sync.chats (owner_id, id, title, version, idempotency_key) "
            "SELECT 'owner-' || o, 'chat', 'chat of ' || o, %s, 'k' FROM generate_series(1, %s) o",
            (per_owner // ENTITIES, owners),
        )
        conn.execute(
            "INSERT INTO acode_sync.messages (owner_id, id, chat_id, role, content, version, "
            "idempotency_key) SELECT 'owner-' || o, 'msg-' || e, 'chat', 'user', "
            "repeat('x', 200), %s, 'k' FROM generate_series(1, %s) o, "
            "generate_series(1, %s) e",
            (per_owner // ENTITIES, owners, ENTITIES - 1),
        )
        conn.execute(
            "INSERT INTO acode_sync.changes (owner_id, seq, entity_type, entity_id, version, op, "
            "idempotency_key, origin_device, changed_at) "
            "SELECT 'owner-' || o, s, CASE WHEN s %% 100 = 0 THEN 'chat' ELSE 'message' END, "
            "CASE WHEN s %% 100 = 0 THEN 'chat' ELSE 'msg-' || (s %% 100) END, s / 100 + 1, "
            "'upsert', 'fill-' || s, 'filler', now() "
            "FROM generate_series(1, %s) o, generate_series(1, %s) s",
            (owners, per_owner),
        )
        conn.execute(
            "INSERT INTO acode_sync.owner_clock (owner_id, seq) "
            "SELECT 'owner-' || o, %s FROM generate_series(1, %s) o",
            (per_owner, owners),
        )
        conn.execute("ANALYZE")
    return time.monotonic() - t0


def device(root: Path, name: str, url: str) -> Workspace:
    folder = root / name
    folder.mkdir()
    with redirect_stdout(StringIO()):
        sync.main(["init", "--workspace", str(folder), "--remote", url], standalone_mode=False)
    return Workspace(folder)


class Probe:
    """The measured owner on one server: a chat and 1,000 messages written by a
    writer device, a reader device that pushes, a connection that pulls."""

    def __init__(
        self, url_admin: str, root: Path, label: str, timing: DeviceResult, analyze: bool
    ) -> None:
        from fleet import url_for

        self.url = url_for(url_admin, user=PROBE)
        writer = device(root, f"{label}-writer", self.url)
        reader = device(root, f"{label}-reader", self.url)
        conn = writer.connect()
        chat = store.new_chat(conn, "history")
        for n in range(1000):
            store.add_message(conn, chat, f"message {n} " + "y" * 100)
        conn.close()
        SyncEngine(writer, writer.config()).sync_once(ignore_backoff=True)
        SyncEngine(reader, reader.config()).sync_once(ignore_backoff=True)
        # Statistics as autovacuum keeps them. Without (--stale-stats), the
        # statistics know every owner of the fill but not the probe owner: the
        # case docs/SCALING.md describes, which server migration 0006 is for.
        if analyze:
            with psycopg.connect(url_admin, autocommit=True) as admin:
                admin.execute("ANALYZE")
        self.timing = timing
        self.engine = SyncEngine(reader, reader.config())
        self.conn = reader.connect()
        self.chat = store.new_chat(self.conn, "mine")
        self.pg = connect_remote(self.url)
        self.push_ms: list[float] = []
        self.items: list[int] = []
        self.pull_ms: list[float] = []

    def push(self, sample: int) -> None:
        """49 messages and their chat: one push() of 50, timed in the device."""
        for n in range(49):
            store.add_message(self.conn, self.chat, f"sample {sample} message {n}")
        before = len(self.timing.push_ms)
        self.engine.sync_once(ignore_backoff=True, pull=False)
        self.push_ms += self.timing.push_ms[before:]
        self.items += self.timing.push_items[before:]

    def pull(self) -> None:
        """One page of 1,000 from the start of the writer's history, for a
        device that holds none of it."""
        t0 = time.perf_counter()
        rows = remote.pull_page(self.pg, 0, 1000, "someone-else")
        self.pull_ms.append((time.perf_counter() - t0) * 1000)
        assert len(rows) == 1000, len(rows)

    def close(self) -> dict[str, Any]:
        self.conn.close()
        self.pg.close()
        push, pull = sorted(self.push_ms), sorted(self.pull_ms)
        return {
            "push_p50": percentile(push, 50),
            "push_p99": percentile(push, 99),
            "items": statistics.mean(self.items),
            "pull_p50": percentile(pull, 50),
            "pull_p99": percentile(pull, 99),
        }


def measure(servers: dict[str, str], root: Path, analyze: bool) -> dict[str, dict[str, Any]]:
    """Both servers sampled interleaved, the order swapped every round, so
    the machine's load falls on both alike."""
    timing = DeviceResult("big", PROBE)
    _timed(timing)
    probes = {label: Probe(url, root, label, timing, analyze) for label, url in servers.items()}
    order = list(probes)
    for sample in range(SAMPLES):
        for label in order:
            probes[label].push(sample)
            probes[label].pull()
        order.reverse()
    return {label: probe.close() for label, probe in probes.items()}


def run_big(admin: str, rows: int, owners: int, quiet: bool, analyze: bool = True) -> str:
    from fleet import drop_database

    root = Path(tempfile.mkdtemp(prefix="acode-fleet-big-"))
    names = (f"acode_fleet_empty_{os.getpid()}", f"acode_fleet_big_{os.getpid()}")
    try:
        empty = create(admin, names[0])
        big = create(admin, names[1])
        progress(f"filling {rows} changes ...", quiet)
        seconds = fill(big, rows, owners)
        with psycopg.connect(big) as conn:
            size = conn.execute(
                "SELECT pg_size_pretty(pg_total_relation_size('acode_sync.changes')), "
                "(SELECT count(*) FROM acode_sync.changes)"
            ).fetchone()
        assert size is not None
        results = measure({"empty": empty, "big": big}, root, analyze)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        drop_database(admin, names[0])
        drop_database(admin, names[1], (PROBE,))  # the probe role goes with the last one
    e, b = results["empty"], results["big"]
    lines = [
        f"big server: {size[1]:,} changes across {owners} owners "
        f"(changes table {size[0]}, filled in {seconds:.0f} s; statistics "
        + ("analyzed after the probe owner wrote)" if analyze else "from before it wrote)"),
        "",
        "| server | push of 50 p50 / p99 ms (items) | pull page of 1,000 p50 / p99 ms |",
        "|---|---|---|",
    ]
    for label, r in results.items():
        lines.append(
            f"| {label} | {r['push_p50']:.1f} / {r['push_p99']:.1f} ({r['items']:.0f}) "
            f"| {r['pull_p50']:.1f} / {r['pull_p99']:.1f} |"
        )
    push_ratio, pull_ratio = b["push_p50"] / e["push_p50"], b["pull_p50"] / e["pull_p50"]
    verdict = "met" if max(push_ratio, pull_ratio) <= 1.5 else "NOT met"
    lines.append(
        f"\nbig / empty p50: push {push_ratio:.2f}x, pull page {pull_ratio:.2f}x "
        f"(target <= 1.5x: {verdict})"
    )
    return "\n".join(lines)
