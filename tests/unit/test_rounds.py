"""A planned round's bookkeeping: which rows it settles, which entities it shares."""

from __future__ import annotations

from acode_sync.outbox import OutboxRow
from acode_sync.rounds import Round


def row(seq: int, entity_id: str, entity_type: str = "message") -> OutboxRow:
    return OutboxRow(
        seq, f"k{seq}", entity_type, entity_id, "upsert", 0, "{}", "Pending", 0, None, None,
        "t", "t", None,
    )  # fmt: skip


def planned(rows: list[OutboxRow], send: list[OutboxRow], batch: list[OutboxRow]) -> Round:
    return Round(rows, send, batch, [(r, r.payload) for r in batch], [], "", True)


def test_settled_counts_the_batchs_entities_and_the_invalid_rows() -> None:
    rows = [row(1, "a"), row(2, "b"), row(3, "a"), row(4, "c"), row(5, "d")]
    coalesced = [rows[2], rows[1], rows[3], rows[4]]  # a's newest row at a's place
    # Every fit row went: the older row of a too.
    assert planned(rows, coalesced, coalesced).settled() == 5
    # c was invalid (not fit), and the batch took all that was fit.
    fit = [rows[2], rows[1], rows[4]]
    assert planned(rows, fit, fit).settled() == 5
    # The batch was cut after b: d stays queued; c (invalid) is settled.
    assert planned(rows, fit, fit[:2]).settled() == 4


def test_rounds_share_an_entity_when_any_row_is_of_the_same_entity() -> None:
    first = planned([row(1, "a"), row(2, "b")], [], [])
    assert first.shares_entity(planned([row(3, "c"), row(4, "b")], [], []))
    assert not first.shares_entity(planned([row(3, "c"), row(4, "d")], [], []))
    # By id alone: a chat and a message with one id count as shared (a re-plan, no harm).
    assert first.shares_entity(planned([row(5, "a", "chat")], [], []))
