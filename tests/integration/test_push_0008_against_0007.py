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
    SETTINGS,
    Pair,
    pair_at,
    same_as_reference,
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
    same_as_reference(pair, data, withdrawals)
