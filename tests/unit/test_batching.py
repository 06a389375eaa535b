"""The Batcher: coalescing order and size limits, without a database."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from acode_sync.batching import coalesce, payload_bytes, take_batch
from acode_sync.outbox import OutboxRow


def split_batches(
    rows: list[OutboxRow], batch_size: int, batch_bytes_max: int
) -> list[list[OutboxRow]]:
    """The batches a drain sends, the way the Uploader cuts them: a batch off
    the head of what is left, again and again."""
    batches: list[list[OutboxRow]] = []
    while True:
        batch = take_batch(rows, batch_size, batch_bytes_max)
        if not batch:
            return batches
        batches.append(batch)
        rows = rows[len(batch) :]


def row(
    seq: int, payload: str = "{}", entity_type: str = "chat", entity_id: str | None = None
) -> OutboxRow:
    return OutboxRow(
        seq=seq,
        idempotency_key=f"key-{seq}",
        entity_type=entity_type,
        entity_id=entity_id if entity_id is not None else f"e{seq}",
        op="upsert",
        base_version=0,
        payload=payload,
        status="Pending",
        retry_count=0,
        next_retry_at=None,
        last_error=None,
        changed_at="2024-01-01T00:00:00.000Z",
        created_at="2024-01-01T00:00:00.000Z",
        synced_at=None,
    )


def seqs(rows: list[OutboxRow]) -> list[int]:
    return [r.seq for r in rows]


def test_payload_bytes_counts_utf8_bytes_not_characters() -> None:
    assert payload_bytes(row(1, "abc")) == 3
    assert payload_bytes(row(1, "é")) == 2
    assert payload_bytes(row(1, "😀")) == 4


def test_hundred_rows_at_batch_50_make_exactly_two_full_batches() -> None:
    rows = [row(i) for i in range(1, 101)]
    batches = split_batches(rows, batch_size=50, batch_bytes_max=1_048_576)
    assert [len(b) for b in batches] == [50, 50]
    assert seqs(batches[0]) == list(range(1, 51))
    assert seqs(batches[1]) == list(range(51, 101))


def test_byte_limit_splits_before_row_count_limit() -> None:
    rows = [row(i, "x" * 40) for i in range(1, 6)]
    # 100 bytes fit two 40-byte rows; a third would make 120.
    batches = split_batches(rows, batch_size=50, batch_bytes_max=100)
    assert [seqs(b) for b in batches] == [[1, 2], [3, 4], [5]]


def test_byte_limit_is_inclusive() -> None:
    rows = [row(1, "x" * 50), row(2, "x" * 50), row(3, "x")]
    assert seqs(take_batch(rows, batch_size=10, batch_bytes_max=100)) == [1, 2]


def test_oversize_row_travels_alone_and_nothing_is_dropped() -> None:
    rows = [row(1, "a" * 10), row(2, "b" * 500), row(3, "c" * 10), row(4, "d" * 10)]
    batches = split_batches(rows, batch_size=50, batch_bytes_max=100)
    assert [seqs(b) for b in batches] == [[1], [2], [3, 4]]


def test_oversize_first_row_is_returned_alone_by_take_batch() -> None:
    rows = [row(1, "b" * 500), row(2, "c")]
    assert seqs(take_batch(rows, batch_size=50, batch_bytes_max=100)) == [1]


def test_partial_batch_when_fewer_rows_than_batch_size() -> None:
    rows = [row(i) for i in range(1, 4)]
    assert seqs(take_batch(rows, batch_size=50, batch_bytes_max=1_000)) == [1, 2, 3]
    assert take_batch([], batch_size=50, batch_bytes_max=1_000) == []
    assert split_batches([], batch_size=50, batch_bytes_max=1_000) == []


@pytest.mark.parametrize(("size", "max_bytes"), [(0, 100), (-1, 100), (10, 0), (10, -5)])
def test_invalid_limits_raise(size: int, max_bytes: int) -> None:
    with pytest.raises(ValueError):
        take_batch([row(1)], size, max_bytes)
    with pytest.raises(ValueError):
        split_batches([], size, max_bytes)


def test_coalesce_sends_newest_payload_at_oldest_position() -> None:
    rows = [
        row(1, '{"title": "draft"}', "chat", "c1"),
        row(2, '{"content": "hi"}', "message", "m1"),
        row(3, '{"title": "renamed"}', "chat", "c1"),
    ]
    result = coalesce(rows)
    assert result == [rows[2], rows[1]]
    assert result[0].payload == '{"title": "renamed"}'


def test_coalesce_several_entities_and_repeats() -> None:
    rows = [
        row(1, entity_type="chat", entity_id="c1"),
        row(2, entity_type="chat", entity_id="c2"),
        row(3, entity_type="message", entity_id="m1"),
        row(4, entity_type="chat", entity_id="c1"),
        row(5, entity_type="message", entity_id="m1"),
        row(6, entity_type="chat", entity_id="c1"),
    ]
    assert seqs(coalesce(rows)) == [6, 2, 5]


def test_coalesce_distinguishes_entity_type_with_same_id() -> None:
    rows = [row(1, entity_type="chat", entity_id="x"), row(2, entity_type="message", entity_id="x")]
    assert seqs(coalesce(rows)) == [1, 2]


def test_coalesce_of_nothing_is_nothing() -> None:
    assert coalesce([]) == []


payloads = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)


@given(
    texts=st.lists(payloads, max_size=60),
    batch_size=st.integers(min_value=1, max_value=12),
    batch_bytes_max=st.integers(min_value=1, max_value=120),
)
def test_split_batches_keeps_every_row_once_in_order_within_limits(
    texts: list[str], batch_size: int, batch_bytes_max: int
) -> None:
    rows = [row(i, p) for i, p in enumerate(texts, start=1)]
    batches = split_batches(rows, batch_size, batch_bytes_max)

    assert [r for b in batches for r in b] == rows
    for batch in batches:
        assert 1 <= len(batch) <= batch_size
        total = sum(payload_bytes(r) for r in batch)
        if total > batch_bytes_max:
            assert len(batch) == 1
    # Each batch is the longest prefix that fits: adding the next row would break a limit.
    for batch, following in pairwise(batches):
        total = sum(payload_bytes(r) for r in batch)
        assert len(batch) == batch_size or total + payload_bytes(following[0]) > batch_bytes_max
    if rows:
        assert take_batch(rows, batch_size, batch_bytes_max) == batches[0]
