"""Benchmark: the server's ``push()`` at two migration levels, interleaved call by call.

Two scratch databases on one server: the reference, migrated up to and
including ``--reference`` (default ``0008_planned_push``: ``push()`` before
0009; ``0007_lean_push`` gives the one before 0008), and the
current one, with every shipped migration. Each gets one chat. Then, round
after round, each database in turn gets one ``acode_sync.push`` of a fresh
batch of new messages (~600 bytes of content, as the other benchmarks) from
the device role, answered ``applied`` for every item, and right after it the
floor: as many rows INSERTed straight into ``acode_sync.messages``
(``harness.FLOOR_INSERT``: keys, foreign key, row-level security, change-log
trigger, no push logic). The order of the two databases swaps every round, so
a busy machine weighs on both alike, which whole runs back to back cannot
promise. Each call is its own transaction (autocommit), its COMMIT included.
Both databases are dropped at the end.

Run::

    python benchmarks/push_interleaved.py [--batch 50] [--calls 300] [--reference NAME] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import harness
import psycopg
from harness import emit, load_average, progress
from harness.machine import code_version
from harness.server import FLOOR_INSERT, ensure_device_role
from psycopg import sql

from acode_sync.migrations import shipped

DEFAULT_REFERENCE = "0008_planned_push"
CHAT = "bench-chat"
TIME = "2026-01-01T00:00:00.000Z"
PUSH = "SELECT result FROM acode_sync.push(%s, 'bench-interleaved', %s::jsonb)"


@dataclass
class Side:
    label: str  # "reference" or "current"
    upto: str  # the last migration applied
    push_s: list[float] = field(default_factory=list)
    floor_s: list[float] = field(default_factory=list)

    def p50_ms(self, samples: list[float]) -> float:
        return statistics.median(samples) * 1000

    def p90_ms(self, samples: list[float]) -> float:
        ordered = sorted(samples)
        return ordered[min(len(ordered) - 1, (9 * len(ordered)) // 10)] * 1000


@dataclass
class InterleavedResult:
    date: str
    load_at_start: str
    code: str
    batch: int
    calls: int
    sides: list[Side]


@contextmanager
def migrated_database(admin_url: str, name: str, upto: str) -> Iterator[str]:
    """A new database with the shipped server migrations up to ``upto``
    applied as psql would (each file as one script); dropped on the way out."""
    order = [m.name for m in shipped("postgres")]
    if upto not in order:
        raise ValueError(f"no shipped server migration {upto!r}")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = harness.with_params(admin_url, dbname=name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for migration in shipped("postgres")[: order.index(upto) + 1]:
                conn.execute(migration.sql.encode())
        with psycopg.connect(admin_url, autocommit=True) as admin:
            ensure_device_role(admin, harness.DEVICE_ROLE)  # once the group role exists
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _item(key: str, entity_type: str, entity_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": key,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "op": "upsert",
        "base_version": 0,
        "changed_at": TIME,
        "payload": payload,
    }


def batch_json(size: int) -> str:
    """``size`` new messages of the benchmark chat, as push() takes them."""
    items = []
    for _ in range(size):
        message_id = str(uuid.uuid4())
        payload = {
            "id": message_id,
            "chat_id": CHAT,
            "role": "user",
            "content": harness.CONTENT + " " + harness.CONTENT,
            "privacy": "FULL",
            "created_at": TIME,
            "updated_at": TIME,
            "deleted_at": None,
        }
        items.append(_item(str(uuid.uuid4()), "message", message_id, payload))
    return json.dumps(items)


def floor_columns(size: int) -> list[list[Any]]:
    """FLOOR_INSERT's arrays for ``size`` new messages of the benchmark chat."""
    now = datetime.now(UTC)
    content = harness.CONTENT + " " + harness.CONTENT
    return [
        [str(uuid.uuid4()) for _ in range(size)],
        [CHAT] * size,
        ["user"] * size,
        [content] * size,
        ["FULL"] * size,
        [now] * size,
        [now] * size,
        [None] * size,
        [1] * size,
        [now] * size,
        ["bench-floor"] * size,
        [str(uuid.uuid4()) for _ in range(size)],
        ["bench-floor"] * size,
    ]


def one_round(conn: psycopg.Connection[Any], side: Side, batch: int, number: int) -> None:
    wire = batch_json(batch)
    start = time.perf_counter()
    results = [row[0] for row in conn.execute(PUSH, (f"b{number}", wire))]
    side.push_s.append(time.perf_counter() - start)
    if results != ["applied"] * batch:
        raise AssertionError(f"{side.label}: push() answered {sorted(set(results))}")
    columns = floor_columns(batch)
    start = time.perf_counter()
    conn.execute(FLOOR_INSERT, columns)
    side.floor_s.append(time.perf_counter() - start)


def run(
    *,
    batch: int,
    calls: int,
    reference: str = DEFAULT_REFERENCE,
    admin_url: str = harness.DEFAULT_ADMIN_URL,
    quiet: bool = True,
) -> InterleavedResult:
    sides = [Side("reference", reference), Side("current", shipped("postgres")[-1].name)]
    result = InterleavedResult(
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        load_at_start=load_average(),
        code=code_version(),
        batch=batch,
        calls=calls,
        sides=sides,
    )
    with ExitStack() as stack:
        conns = []
        for side in sides:
            name = f"acode_bench_il_{side.label}_{os.getpid()}"
            url = stack.enter_context(migrated_database(admin_url, name, side.upto))
            device = harness.with_params(url, user=harness.DEVICE_ROLE)
            conn = stack.enter_context(psycopg.connect(device, autocommit=True))
            chat: dict[str, Any] = {"id": CHAT, "title": "benchmark", "privacy": "FULL"}
            chat |= {"created_at": TIME, "updated_at": TIME, "deleted_at": None}
            conn.execute(PUSH, ("b-chat", json.dumps([_item("k-chat", "chat", CHAT, chat)])))
            conns.append(conn)
        progress(f"{calls} rounds of {batch}, interleaved", quiet)
        for number in range(calls):
            order = [0, 1] if number % 2 == 0 else [1, 0]
            for i in order:
                one_round(conns[i], sides[i], batch, number)
        for conn in conns:
            row = conn.execute("SELECT count(*) FROM acode_sync.messages").fetchone()
            if row is None or row[0] != 2 * batch * calls:
                raise AssertionError(f"the server holds {row} messages, want {2 * batch * calls}")
    return result


def to_markdown(result: InterleavedResult, command: str) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        f"- date: {result.date}; load at start: {result.load_at_start}",
        f"- code: {result.code}",
        f"- {result.calls} rounds, batches of {result.batch} new messages, order swapped "
        "every round",
        "",
        "| database (migrated up to) | push p50 ms | push p90 ms | floor p50 ms "
        "| push / floor (p50) | push rows/s (p50) |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for side in result.sides:
        push, floor = side.p50_ms(side.push_s), side.p50_ms(side.floor_s)
        lines.append(
            f"| {side.label} ({side.upto}) | {push:.2f} | {side.p90_ms(side.push_s):.2f} | "
            f"{floor:.2f} | {push / floor:.2f} | {result.batch / push * 1000:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--calls", type=int, default=300, help="rounds (one call per database)")
    parser.add_argument("--reference", default=DEFAULT_REFERENCE)
    parser.add_argument("--admin-url", default=harness.DEFAULT_ADMIN_URL)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    result = run(
        batch=args.batch,
        calls=args.calls,
        reference=args.reference,
        admin_url=args.admin_url,
        quiet=args.quiet,
    )
    command = "python benchmarks/push_interleaved.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    emit(to_markdown(result, command.strip()), args.out)


if __name__ == "__main__":
    main()
