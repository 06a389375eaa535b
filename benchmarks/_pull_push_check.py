"""(3) Conflict detection at push, on the server: batches of updates made on the
current version beside stale ones, interleaved."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from _pull_fill import STALE_WRITER_ID, WRITER_ID, Row
from harness import DEVICE_ROLE, progress, with_params
from ulid import ULID

from acode_sync.clock import iso, utcnow
from acode_sync.engine import connect_remote
from acode_sync.remote import push_batch


@dataclass(frozen=True)
class PushCheckResult:
    batch: int
    applied_s: tuple[float, ...]
    stale_s: tuple[float, ...]
    conflicts_logged: int

    @property
    def applied_ms(self) -> float:
        return statistics.median(self.applied_s) * 1e3

    @property
    def stale_ms(self) -> float:
        return statistics.median(self.stale_s) * 1e3

    @property
    def extra_us_per_item(self) -> float:
        return (self.stale_ms - self.applied_ms) / self.batch * 1e3

    @property
    def stale_us_per_item(self) -> float:
        return self.stale_ms / self.batch * 1e3


def update_items(targets: Sequence[Row], base_version: int, tag: str) -> str:
    items = []
    changed_at = iso(utcnow())
    for m in targets:
        items.append(
            {
                "key": str(ULID()),
                "entity_type": "message",
                "entity_id": m[0],
                "op": "upsert",
                "base_version": base_version,
                "changed_at": changed_at,
                "payload": {
                    "id": m[0],
                    "chat_id": m[1],
                    "role": m[2],
                    "content": f"{m[3]} ({tag})",
                    "privacy": "FULL",
                    "created_at": m[7],
                    "updated_at": changed_at,
                    "deleted_at": None,
                },
            }
        )
    return json.dumps(items)


def run_push_check(
    db_url: str, targets: Sequence[Row], *, repeats: int, quiet: bool
) -> PushCheckResult:
    """Batches of updates on the current version vs stale ones, interleaved
    (one warm-up pair first)."""
    device_url = with_params(db_url, user=DEVICE_ROLE)
    version = 1  # every target is at version 1 after the fill
    applied: list[float] = []
    stale: list[float] = []
    with connect_remote(device_url) as remote:

        def send(kind: str) -> float:
            nonlocal version
            base = version if kind == "applied" else version - 1
            items = update_items(targets, base, f"{kind} on v{base}")
            start = time.perf_counter()
            # A stale change conflicts only when another device wrote the
            # current row: a device never conflicts with itself.
            device = WRITER_ID if kind == "applied" else STALE_WRITER_ID
            results = push_batch(remote, str(ULID()), device, items).results
            seconds = time.perf_counter() - start
            want = "applied" if kind == "applied" else "conflict"
            outcomes = {r.outcome for r in results}
            if len(results) != len(targets) or outcomes != {want}:
                raise AssertionError(f"{kind} batch: outcomes {outcomes}, want {want}")
            if kind == "applied":
                version += 1
            return seconds

        for index in range(repeats + 1):
            order = ("applied", "stale") if index % 2 == 0 else ("stale", "applied")
            for kind in order:
                seconds = send(kind)
                if index > 0:
                    (applied if kind == "applied" else stale).append(seconds)
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM acode_sync.conflicts").fetchone()
    logged = int(row[0]) if row else 0
    if logged != (repeats + 1) * len(targets):
        raise AssertionError(f"{logged} conflicts logged, want {(repeats + 1) * len(targets)}")
    progress(f"  push check: {repeats} + 1 pairs of batches of {len(targets)}", quiet)
    return PushCheckResult(
        batch=len(targets), applied_s=tuple(applied), stale_s=tuple(stale), conflicts_logged=logged
    )
