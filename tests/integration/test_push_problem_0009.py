"""push_problem() as migration 0009 made it, against 0004's (the one 0008's
push() inlines): the same verdict for every item of a hostile product of
times (valid, invalid, JSON null, a number, missing, equal or not to each
other and to the change time's rendering) and change times. 0009 only skips
the regular expression for a created_at that is the change time as utc_ms()
renders it, and for an updated_at equal to the created_at checked before it."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import psycopg

from tests.fix_pg import PgDatabase

MIGRATION_0004 = Path(__file__).parents[2] / "sql" / "postgres" / "0004_named_push.sql"
MISSING = object()
TIMES: list[Any] = [
    "2026-12-07T19:14:57.011Z",
    "2026-12-07T19:14:58.011Z",
    "2026-12-07T19:14:57+02:00",
    "2026-12-07 19:14:57",
    "2026-12-07T19:14:57.011Z\n",
    "2026-13-07T19:14:57Z",
    "not a time",
    "",
    None,  # JSON null
    5,
    MISSING,
]


def _old_push_problem(conn: psycopg.Connection[Any]) -> None:
    """0004's push_problem, as pg_temp.push_problem_0004 (this session only)."""
    text = MIGRATION_0004.read_text(encoding="utf-8")
    found = re.search(
        r"CREATE OR REPLACE FUNCTION acode_sync\.push_problem\(.*?\n\$\$;", text, re.S
    )
    assert found is not None
    body = found.group(0).replace("acode_sync.push_problem(", "pg_temp.push_problem_0004(", 1)
    conn.execute(body)


CHANGED_AT = [None, "2026-12-07T19:14:57.011Z", "2026-12-07T19:14:57.011+02:00"]


def _payloads() -> list[dict[str, Any]]:
    items = []
    for changed_at, entity_type, created, updated, deleted in itertools.product(
        CHANGED_AT, ("chat", "message"), TIMES, TIMES, (None, "2026-12-07T19:14:57Z", "later", 7)
    ):
        payload: dict[str, Any] = {
            "id": "e1",
            "chat_id": "c1",
            "title": "t",
            "role": "user",
            "content": "hi",
            "privacy": "FULL",
            "deleted_at": deleted,
        }
        for key, value in (("created_at", created), ("updated_at", updated)):
            if value is not MISSING:
                payload[key] = value
        items.append({"entity_type": entity_type, "changed_at": changed_at, "payload": payload})
    return items


def test_0009_gives_every_verdict_0004_gave(pg: PgDatabase) -> None:
    items = _payloads()
    with pg.admin() as conn:
        _old_push_problem(conn)
        rows = conn.execute(
            """
            SELECT i.ord, pg_temp.push_problem_0004(k, t, 'e1', 'upsert', 0, c, p, true),
                   acode_sync.push_problem(k, t, 'e1', 'upsert', 0, c, p, true)
            FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS i(item, ord),
                 LATERAL (SELECT 'key-' || i.ord AS k, i.item->>'entity_type' AS t,
                                 (i.item->>'changed_at')::timestamptz AS c,
                                 i.item->'payload' AS p) x
            ORDER BY i.ord
            """,
            (json.dumps(items),),
        ).fetchall()
    assert len(rows) == len(items)
    differ = [(items[ord - 1], old, new) for ord, old, new in rows if old != new]
    assert differ == []
    verdicts = {old for _ord, old, _new in rows}
    rendered = [
        item
        for item in items
        if item["changed_at"] == CHANGED_AT[1] and item["payload"].get("created_at") == TIMES[0]
    ]
    assert rendered  # the case 0009 no longer reads with a regular expression
    # The product reaches each time check, passing and failing.
    assert None in verdicts
    assert {
        "created_at must be an ISO-8601 time",
        "updated_at must be an ISO-8601 time",
        "deleted_at must be null or an ISO-8601 time",
    } <= verdicts
