"""push() as migration 0007 made it (one body, cheaper per call), against 0006's.

0007 changed no answer and no write, only what a call costs: on the same
random batches (two devices, chat withdrawals or not, duplicates, stale
versions, bad items) both must give the same answers, server rows included,
and leave the same entities, change log (seq for seq) and conflict log.
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
    with pair_at("0006_plans_for_new_owners", "0007_lean_push") as found:
        yield found


@SETTINGS
@given(data=st.data(), withdrawals=st.booleans())
def test_0007_answers_and_writes_as_0006_did(
    pair: Pair, data: st.DataObject, withdrawals: bool
) -> None:
    same_as_reference(pair, data, withdrawals)
