"""push() as migration 0008 made it (cached plans), against 0007's.

0008 changed no answer and no write, only what a call costs: its look-ups are
static SQL with plans cached by the session (0007 planned them for every
call), the validation is inlined, and each table's upsert and withdrawals are
one statement. On the same random batches (two devices, chat withdrawals or
not, duplicates, stale versions, bad items) both must give the same answers,
server rows included, and leave the same entities, change log (seq for seq)
and conflict log. The two sessions live as long as the module, so most
batches run on plans a session cached earlier.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.integration.test_push_against_0001 import (
    DEVICES,
    SETTINGS,
    Model,
    Pair,
    _push,
    items_of_a_batch,
    pair_at,
)


@pytest.fixture(scope="module")
def pair(device_roles: tuple[str, ...]) -> Iterator[Pair]:
    with pair_at("0007_lean_push", "0008_planned_push") as found:
        yield found


@SETTINGS
@given(data=st.data(), withdrawals=st.booleans())
def test_0008_answers_and_writes_as_0007_did(
    pair: Pair, data: st.DataObject, withdrawals: bool
) -> None:
    pair.reset()
    model = Model()
    for number in range(data.draw(st.integers(1, 8), label="batches")):
        device = data.draw(st.sampled_from(DEVICES), label=f"device {number}")
        items = data.draw(items_of_a_batch(model, withdrawals), label=f"batch {number}")
        old = _push(pair.reference, f"b{number}", device, items)
        new = _push(pair.current, f"b{number}", device, items)
        assert new == old, items
        if isinstance(new, list):
            for item, answer in zip(items, new, strict=True):
                if answer[2] in ("applied", "duplicate", "conflict") and answer[3] is not None:
                    model.versions[item["entity_id"]] = answer[3]
    old_state, new_state = pair.states()
    for table in ("chats", "messages", "changes", "conflicts"):
        assert old_state[table] == new_state[table], table
