"""push() as migration 0004 split it, against 0002's, on the same random batches.

0004 changed no answer and no write. It changed one shape on purpose: the
server's row in a conflict answer (and in the server's conflict log) is the
wire row, times as UTC ISO-8601 with milliseconds (``acode_sync.utc_ms``), where
0002 gave ``to_jsonb(row) - 'owner_id'``, times as PostgreSQL prints them. With
those times read as instants, to the millisecond, everything must be equal:
answers, entities, the change log and the conflict log.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from acode_sync.clock import iso, parse_iso
from tests.integration.test_push_against_0001 import (
    DEVICES,
    SETTINGS,
    Model,
    Pair,
    _push,
    items_of_a_batch,
    pair_at,
)

TIMES = ("created_at", "updated_at", "deleted_at", "changed_at")
# The keys a conflict answer carried under 0002, and carries still.
ROW_KEYS = {"version", "changed_at", "origin_device", "idempotency_key", "batch_id"}


@pytest.fixture(scope="module")
def pair(device_roles: tuple[str, ...]) -> Iterator[Pair]:
    with pair_at("0002_withdrawn_chat_messages", "0004_named_push") as found:
        yield found


def _row(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """A server row with its times as instants to the millisecond."""
    if row is None:
        return None
    return {k: iso(parse_iso(v)) if k in TIMES and v is not None else v for k, v in row.items()}


def _answers(found: Any) -> Any:
    if not isinstance(found, list):
        return found
    return [(*answer[:5], _row(answer[5])) for answer in found]


def _check_wire_shape(found: Any) -> None:
    for answer in found if isinstance(found, list) else ():
        row = answer[5]
        if row is None:
            continue
        assert row.keys() >= ROW_KEYS, row
        for key in TIMES:
            assert row[key] is None or row[key] == iso(parse_iso(row[key])), (key, row)


@SETTINGS
@given(data=st.data(), withdrawals=st.booleans())
def test_0004_answers_and_writes_as_0002_did(
    pair: Pair, data: st.DataObject, withdrawals: bool
) -> None:
    pair.reset()
    model = Model()
    for number in range(data.draw(st.integers(1, 8), label="batches")):
        device = data.draw(st.sampled_from(DEVICES), label=f"device {number}")
        items = data.draw(items_of_a_batch(model, withdrawals), label=f"batch {number}")
        old = _push(pair.reference, f"b{number}", device, items)
        new = _push(pair.current, f"b{number}", device, items)
        _check_wire_shape(new)
        assert _answers(new) == _answers(old), items
        if isinstance(new, list):
            for item, answer in zip(items, new, strict=True):
                if answer[2] in ("applied", "duplicate", "conflict") and answer[3] is not None:
                    model.versions[item["entity_id"]] = answer[3]
    old_state, new_state = pair.states()
    for table in ("chats", "messages", "changes"):
        assert old_state[table] == new_state[table], table
    logged = [[(*c[:6], _row(c[6])) for c in s["conflicts"]] for s in (old_state, new_state)]
    assert logged[0] == logged[1]
