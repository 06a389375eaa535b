"""The pooled path: devices of two owners syncing at once through PgBouncer in
transaction mode, with fewer server connections than devices.

Every statement acode-sync sends is its own transaction and keeps no session
state (no prepared statements, no session settings, no advisory locks), so
consecutive statements of one device may run on different server connections
and owners share them: zero errors, and every device converges.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from acode_sync import store
from acode_sync.workspace import write
from tests.benchmarks_loader import load_benchmark
from tests.fix_pg import DEVICE_ROLES, PgDatabase
from tests.fix_sync import Device, make_device

pgbouncer = load_benchmark("pgbouncer")

DEVICES_PER_OWNER = 3
POOL = 2  # server connections per (database, role) pair: fewer than devices
ROUNDS = 8


@pytest.fixture
def bouncer(pg: PgDatabase) -> Any:
    # bin/test installs pgbouncer; missing, this fails (a skip would pass unseen).
    try:
        binary = pgbouncer.find_pgbouncer()
    except pgbouncer.PgBouncerMissing as exc:
        pytest.fail(f"{exc} (bin/test installs it: apt-get install pgbouncer)")
    assert binary
    params = conninfo_to_dict(pg.url())
    with pgbouncer.PgBouncer(
        str(params.get("host", "127.0.0.1")),
        int(str(params.get("port", 5432))),
        list(DEVICE_ROLES),
        pool_size=POOL,
    ) as running:
        yield running


def _view(device: Device) -> dict[str, tuple[Any, ...]]:
    conn = device.db()
    try:
        rows = conn.execute("SELECT id, title, version FROM chats").fetchall()
        rows += conn.execute("SELECT id, content, version FROM messages").fetchall()
        return {r[0]: tuple(r[1:]) for r in rows}
    finally:
        conn.close()


def test_devices_of_two_owners_sync_at_once_through_pgbouncer(
    tmp_path: Path, pg: PgDatabase, bouncer: Any
) -> None:
    devices: dict[str, list[Device]] = {}
    for role in DEVICE_ROLES:
        who = role.removeprefix("acode_test_")
        devices[who] = [
            make_device(tmp_path, f"{who}-{n}", bouncer.url(role, pg.dbname))
            for n in range(DEVICES_PER_OWNER)
        ]
    errors: list[str] = []
    start = threading.Barrier(sum(len(d) for d in devices.values()))

    def work(device: Device) -> None:
        conn = device.db()
        try:
            chat = store.new_chat(conn, f"{device.name} chat")
            start.wait()
            for n in range(ROUNDS):
                for k in range(5):
                    store.add_message(conn, chat, f"{device.name} round {n} message {k}")
                with write(conn):
                    conn.execute("UPDATE chats SET title = ? WHERE id = ?", (f"r{n}", chat))
                report = device.sync()
                errors.extend(report.push.errors)
                if report.incomplete or report.pull_failed:
                    errors.append(f"{device.name}: cycle incomplete in round {n}")
        except Exception as exc:  # every failure is the finding
            errors.append(f"{device.name}: {type(exc).__name__}: {exc}")
        finally:
            conn.close()

    threads = [
        threading.Thread(target=work, args=(d,)) for group in devices.values() for d in group
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []

    for group in devices.values():  # settle, still through the pooler
        for _ in range(2):
            for device in group:
                report = device.sync()
                assert not report.incomplete, report.push.errors
    with pg.admin() as admin:
        for role, group in zip(DEVICE_ROLES, devices.values(), strict=True):
            rows = admin.execute(
                "SELECT id, title, version FROM acode_sync.chats WHERE owner_id = %s "
                "UNION ALL SELECT id, content, version FROM acode_sync.messages "
                "WHERE owner_id = %s",
                (role, role),
            ).fetchall()
            expected = {r[0]: tuple(r[1:]) for r in rows}
            assert len(expected) == DEVICES_PER_OWNER * (1 + ROUNDS * 5)
            for device in group:
                assert _view(device) == expected, device.name
