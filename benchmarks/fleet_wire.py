"""The fleet's server path without its client processes: the same database,
owners, PgBouncer and pool as ``fleet.py``, the same ``push()`` of a batch and
``pull()`` pages at the same aggregate rate, but sent by N threads of one
process (each its own connection, as its owner's role) instead of N device
processes that also write SQLite, validate, mark and apply.

It is the floor beside fleet.py's latency target: what the server and the
pooler answer at N devices x rate changes/s when the client machines are
elsewhere. ``fleet.py --wire`` runs it beside the fleet, same sizes.

Each thread pushes a batch every batch/rate seconds (its chat first, then
messages of ~100 bytes, each item as the capture triggers write it), then
pulls from its cursor until a short page, as a device's cycle does; both
calls are timed through ``acode_sync.remote`` (the device's own calls).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

from harness import percentile
from ulid import ULID

from acode_sync import remote
from acode_sync.engine import connect_remote


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class WireDevice(threading.Thread):
    """One device's calls, on its own connection, on a fixed schedule."""

    def __init__(self, name: str, url: str, rate: float, batch: int, window: tuple[float, float]):
        super().__init__(daemon=True)
        self.name, self.url, self.rate, self.batch = name, url, rate, batch
        self.start_at, self.stop_at = window
        self.chat = str(ULID())
        self.sent = 0
        self.cursor = 0
        self.push_ms: list[float] = []
        self.pull_ms: list[float] = []
        self.errors: list[str] = []

    def _item(self, now: str) -> str:
        if self.sent == 0:
            kind, entity = "chat", self.chat
            payload: dict[str, Any] = {"id": entity, "title": f"{self.name} chat"}
        else:
            kind, entity = "message", str(ULID())
            payload = {"id": entity, "chat_id": self.chat, "role": "user"}
            payload["content"] = f"{self.name} message {self.sent} " + "x" * 80
        payload |= {"privacy": "FULL", "created_at": now, "updated_at": now, "deleted_at": None}
        self.sent += 1
        return json.dumps(
            {
                "key": str(ULID()),
                "entity_type": kind,
                "entity_id": entity,
                "op": "upsert",
                "base_version": 0,
                "changed_at": now,
                "payload": payload,
            }
        )

    def run(self) -> None:
        period = self.batch / self.rate
        try:
            conn = connect_remote(self.url)  # as a device connects
        except Exception as exc:  # the benchmark counts every failure
            self.errors.append(f"connect: {exc}")
            return
        cycle = 0
        with conn:
            while (due := self.start_at + cycle * period) < self.stop_at:
                time.sleep(max(0.0, due - time.time()))
                cycle += 1
                now = _iso(time.time())
                items = "[" + ", ".join(self._item(now) for _ in range(self.batch)) + "]"
                try:
                    t0 = time.perf_counter()
                    remote.push_batch(conn, str(ULID()), self.name, items)
                    self.push_ms.append((time.perf_counter() - t0) * 1000)
                    while True:
                        t0 = time.perf_counter()
                        rows = remote.pull_page(conn, self.cursor, 1000, self.name)
                        self.pull_ms.append((time.perf_counter() - t0) * 1000)
                        if rows:
                            self.cursor = int(rows[-1][0])  # seq
                        if len(rows) < 1000:
                            break
                except Exception as exc:  # the benchmark counts every failure
                    self.errors.append(f"{type(exc).__name__}: {exc}")


def run_wire(args: argparse.Namespace, n: int, mode: str) -> dict[str, Any]:
    """fleet.py's run_fleet with WireDevice threads for device processes."""
    from fleet import DATABASE, BackendCpu, fleet_server, logged

    with fleet_server(args, n, mode) as server:
        window = (time.time() + 1.0, time.time() + 1.0 + args.seconds)
        roles = server.roles
        devices = [
            WireDevice(
                f"wire-{d}", server.url(roles[d % len(roles)]), args.rate, args.batch, window
            )
            for d in range(n)
        ]
        before = logged(server.db_url)
        cpu0 = time.process_time()
        with BackendCpu(DATABASE) as sampler:
            for device in devices:
                device.start()
            for device in devices:
                device.join()
        driver_cpu = time.process_time() - cpu0
        rows = logged(server.db_url) - before
        owners, bouncer = len(roles), server.bouncer
    push = sorted(x for d in devices for x in d.push_ms)
    pull = sorted(x for d in devices for x in d.pull_ms)
    errors = [e for d in devices for e in d.errors]
    return {
        "mode": mode,
        "n": n,
        "m": owners,
        "pool": f"{args.pool}/owner" if bouncer else "-",
        "accepted_per_s": rows / args.seconds,
        "push_p50": percentile(push, 50) if push else 0.0,
        "push_p99": percentile(push, 99) if push else 0.0,
        "pull_p50": percentile(pull, 50) if pull else 0.0,
        "pull_p99": percentile(pull, 99) if pull else 0.0,
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "server_cpu_per_1000": sampler.seconds / rows * 1000 if rows else 0.0,
        "client_cpu_per_1000": driver_cpu / rows * 1000 if rows else 0.0,
    }


def wire_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| path (one driver process) | N | M | pool | accepted/s | push of 50 p50 / p99 ms | "
        "pull page p50 / p99 ms | errors | server / driver CPU s per 1k changes |",
        "|" + "---|" * 9,
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['n']} | {r['m']} | {r['pool']} | {r['accepted_per_s']:.0f} | "
            f"{r['push_p50']:.1f} / {r['push_p99']:.1f} | "
            f"{r['pull_p50']:.1f} / {r['pull_p99']:.1f} | {r['errors']} | "
            f"{r['server_cpu_per_1000']:.3f} / {r['client_cpu_per_1000']:.3f} |"
        )
    return "\n".join(lines)
