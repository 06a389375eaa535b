"""The Batcher: which due outbox rows travel, and in which round trips.

Kept pure (no database, no clock) so the two rules the upload depends on can be
tested on their own:

* Coalescing sends only an entity's newest row but at the position of its
  *oldest* row, so an entity never reaches the server after something that
  refers to it (a chat created, given messages, then renamed still goes first).
* Size limits cut a batch off the queue's head without ever dropping a row: a
  row larger than the byte limit travels alone instead of blocking the queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter

from acode_sync.outbox import OutboxRow


def payload_bytes(row: OutboxRow) -> int:
    """Size of the row on the wire: the UTF-8 length, not the character count."""
    # surrogatepass: a row with a bad byte is isolated before batching, but a
    # size must never be the thing that raises.
    return len(row.payload.encode("utf-8", "surrogatepass"))


_SEQ = attrgetter("seq")  # no Python call per row, as a lambda would be


def coalesce(rows: Sequence[OutboxRow]) -> list[OutboxRow]:
    """Keep the newest row per entity, placed where that entity first appeared.

    ``rows`` are due outbox rows in seq order; the result is in send order.
    The newest row carries the full latest state, so older rows of the same
    entity add nothing but a round trip (they are marked Superseded when the
    newest is acknowledged).
    """
    # Entity key -> index into `slots`, the entity's first position in the input.
    first_slot: dict[tuple[str, str], int] = {}
    slots: list[OutboxRow] = []
    # Sort defensively: "newest" must mean highest seq even if a caller hands
    # rows over in another order.
    for row in sorted(rows, key=_SEQ):
        key = (row.entity_type, row.entity_id)
        slot = first_slot.get(key)
        if slot is None:
            first_slot[key] = len(slots)
            slots.append(row)
        else:
            slots[slot] = row
    return slots


def take_batch(rows: Sequence[OutboxRow], batch_size: int, batch_bytes_max: int) -> list[OutboxRow]:
    """The longest prefix of ``rows`` within both the row and the byte limit.

    A first row that alone exceeds ``batch_bytes_max`` is returned by itself:
    refusing it would stall every row behind it forever.
    """
    _check_limits(batch_size, batch_bytes_max)
    return list(rows[: _batch_end(rows, 0, batch_size, batch_bytes_max)])


def _check_limits(batch_size: int, batch_bytes_max: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if batch_bytes_max < 1:
        raise ValueError(f"batch_bytes_max must be at least 1, got {batch_bytes_max}")


def _batch_end(rows: Sequence[OutboxRow], start: int, batch_size: int, bytes_max: int) -> int:
    """Index one past the last row of the batch starting at ``start``."""
    end = start
    total = 0
    limit = min(len(rows), start + batch_size)
    while end < limit:
        size = payload_bytes(rows[end])
        # The first row always goes, however large, so the queue cannot stall;
        # once it is over the limit, this check stops the batch right after it.
        if end > start and total + size > bytes_max:
            break
        total += size
        end += 1
    return end
