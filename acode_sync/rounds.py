"""One round of the upload as planned before it goes on the wire, and the
wire form of its items.

A round is the local half of a batch: the claimed rows, the ones fit to go, the
batch cut from them, each item's payload at its privacy level now, and the
JSON ``acode_sync.push`` takes. The uploader plans the next round while the
previous one is on the wire (``acode_sync.upload``); :attr:`Round.clean` says
whether that is allowed after this one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii

from acode_sync.outbox import OutboxRow


@dataclass
class PushReport:
    """What one push did, item by item outcome, and the errors to show."""

    errors: list[str] = field(default_factory=list)
    batches: int = 0
    sent: int = 0
    applied: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0
    failed: int = 0
    withheld: int = 0
    # A batch was answered: the server is reachable again in this cycle.
    reached: bool = False
    # Set when the link failed mid-cycle (one of ``errors``): status says offline.
    link_error: str | None = None

    @property
    def uploaded(self) -> int:
        return self.applied + self.duplicates


@dataclass(frozen=True)
class Round:
    rows: list[OutboxRow]  # claimed, in seq order
    send: list[OutboxRow]  # fit to go: the invalid ones are Failed already
    batch: list[OutboxRow]  # this round's batch, a prefix of ``send``
    items: list[tuple[OutboxRow, str]]  # what travels, payload at its level now
    withheld: list[OutboxRow]  # LOCAL_ONLY now: superseded, never sent
    wire: str  # ``items`` as push()'s JSON argument
    # The claim held nothing back and the batch took every row fit to go: the
    # next round may be claimed after :attr:`last_seq` while this one is in flight.
    clean: bool

    @property
    def last_seq(self) -> int:
        return max(row.seq for row in self.rows)

    def shares_entity(self, other: Round) -> bool:
        """Whether a row of ``other`` may be of an entity this round claimed.
        By id alone (a chat and a message with one id would count as shared:
        the caller then only plans again), a few times cheaper than by key."""
        return not {row.entity_id for row in self.rows}.isdisjoint(
            [row.entity_id for row in other.rows]
        )

    def settled(self) -> int:
        """How many claimed rows the round took out of the queue: those of the
        batch's entities (the older rows it coalesced too) and those isolated
        as invalid."""
        if len(self.batch) == len(self.send):
            return len(self.rows)  # the batch took every row fit to go (a prefix of them)
        sent = {(row.entity_type, row.entity_id) for row in self.batch}
        fit = {(row.entity_type, row.entity_id) for row in self.send}
        keys = [(row.entity_type, row.entity_id) for row in self.rows]
        return sum(1 for key in keys if key in sent or key not in fit)

    def isolated(self) -> int:
        """How many claimed rows were isolated as invalid (Failed for good)."""
        fit = {(row.entity_type, row.entity_id) for row in self.send}
        return sum(1 for row in self.rows if (row.entity_type, row.entity_id) not in fit)


def wire_items(items: Sequence[tuple[OutboxRow, str]]) -> str:
    """The batch as JSON text; payloads are spliced in as the JSON they already are.

    Each item is the text ``json.dumps`` makes of its head fields, byte for
    byte, written out here: a dict and a ``dumps`` per item cost a drain
    about as much as its claim. Strings go through the encoder ``dumps`` itself
    uses (``ensure_ascii``; a TEXT column holds a str, or a BLOB, which neither
    can encode), an integer as its repr; any other version through ``dumps``."""
    text = encode_basestring_ascii
    return (
        "["
        + ", ".join(
            [
                f'{{"key": {text(row.idempotency_key)}, "entity_type": {text(row.entity_type)}, '
                f'"entity_id": {text(row.entity_id)}, "op": {text(row.op)}, '
                f'"base_version": {_version(row.base_version)}, '
                f'"changed_at": {text(row.changed_at)}, "payload": {payload}}}'
                for row, payload in items
            ]
        )
        + "]"
    )


def _version(value: object) -> str:
    return int.__repr__(value) if type(value) is int else json.dumps(value)
