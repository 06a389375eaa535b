"""The upload path: the batch mover (the specification's OutboxProcessor).

One round of :meth:`Uploader.push`:

1. claim due outbox rows in ``seq`` order (``outbox.claim_due``): a row still
   waiting out a backoff holds back only what depends on it; rows that
   failed for good (rejected, or out of attempts) are skipped: they wait for
   ``retry`` and never block the queue. Once a batch of the round was
   answered, rows that failed only because the link broke are due again;
2. coalesce (newest row per entity, at its oldest row's position) and cut a
   batch by count and bytes;
3. re-check privacy against the entity as it is now;
4. send the batch: one round trip, one server transaction (``acode_sync.push``);
5. mark every result in one local transaction.

A failure of the link during a batch marks that batch Failed with a backoff
(its retry state lives in the rows, so it survives restarts); a connection
that cannot be made at all changes nothing: being offline must not use up
attempts. A batch the server refuses as a whole for a permanent reason is
split until the bad item stands alone, so one bad item never sinks the rest.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from ulid import ULID

from acode_sync import conflicts, outbox, privacy
from acode_sync.apply import ENTITY_TABLE
from acode_sync.batching import coalesce, take_batch
from acode_sync.clock import iso
from acode_sync.errors import (
    BATCH_FAILED,
    INVALID_PAYLOAD,
    MAX_RETRIES_EXCEEDED,
    ConnectionFailed,
    SetupError,
)
from acode_sync.link import note_contact
from acode_sync.mover import Mover
from acode_sync.outbox import OutboxRow, claim_due
from acode_sync.progress import UPLOAD, Progress
from acode_sync.queries import query
from acode_sync.remote import ItemResult, push_batch
from acode_sync.retry import RetryPolicy, is_transient
from acode_sync.text import printable
from acode_sync.validate import check_items
from acode_sync.workspace import write

log = logging.getLogger(__name__)

Rand = Callable[[], float]


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


@dataclass(eq=False)
class Uploader(Mover):
    """The batch mover: claim, coalesce, check, send, mark (see the module docstring)."""

    rand: Rand = field(default=random.random, kw_only=True)

    def __post_init__(self) -> None:
        self.policy = RetryPolicy.from_config(self.config.retry)

    def push(
        self,
        remote: psycopg.Connection[Any],
        *,
        ignore_backoff: bool = False,
        max_batches: int | None = None,
        progress: Progress | None = None,
    ) -> PushReport:
        """Send every due row; stop early when the link fails. ``progress`` hears
        of every batch once it is marked."""
        report = PushReport()
        if progress is not None:
            figures = outbox.counts(self.conn)
            progress.total(UPLOAD, figures.pending + figures.waiting)
        while max_batches is None or report.batches < max_batches:
            rows = claim_due(
                self.conn,
                self.clock(),
                self.config.upload.batch_size,
                ignore_backoff=ignore_backoff,
                # Backoff protects a struggling server; once it has answered a
                # batch, what failed only because the link broke goes too, so
                # the queue does not stall behind the link's backoff.
                release_link_failures=report.reached,
            )
            if not rows:
                break
            send = self._isolate_invalid(coalesce(rows), report)
            if not send:
                if progress is not None:
                    progress.advance(UPLOAD, len(rows))
                continue  # every claimed row was unfit; they are Failed now
            batch = take_batch(
                send, self.config.upload.batch_size, self.config.upload.batch_bytes_max
            )
            if not self._send(remote, batch, report):
                break
            if progress is not None:
                progress.advance(UPLOAD, _settled(rows, send, batch))
        return report

    def _isolate_invalid(self, rows: list[OutboxRow], report: PushReport) -> list[OutboxRow]:
        """Mark the rows that cannot be uploaded as they are Failed for good
        (ACODE-SYNC-005, with the column and the reason); return the rest."""
        reasons = check_items(self.conn, rows, self.config.upload.item_bytes_max)
        if not reasons:
            return rows
        now = iso(self.clock())
        with write(self.conn):
            for row in rows:
                reason = reasons.get(row.seq)
                if reason is None:
                    continue
                report.rejected += 1
                report.errors.append(f"{row.entity_type} {printable(row.entity_id)}: {reason}")
                # By seq, never by the id: an id that is not UTF-8 cannot be a parameter.
                self.conn.execute(query("fail_for_good"), {"error": reason, "seq": row.seq})
                self.conn.execute(query("supersede_older_by_seq"), {"seq": row.seq, "now": now})
                self.conn.execute(
                    f"UPDATE {ENTITY_TABLE[row.entity_type]} SET sync_status = 'Failed' "
                    "WHERE id = (SELECT entity_id FROM sync_outbox WHERE seq = ?)",
                    (row.seq,),
                )
        return [row for row in rows if row.seq not in reasons]

    # -- one batch -----------------------------------------------------------

    def _send(
        self, remote: psycopg.Connection[Any], batch: list[OutboxRow], report: PushReport
    ) -> bool:
        """Send one batch and mark it; False when the link failed (stop for now)."""
        items, withheld = self._prepare(batch)
        report.batches += 1
        if withheld:
            self._mark_withheld(withheld)
            report.withheld += len(withheld)
        if not items:
            return True
        try:
            results = self._push_isolating(remote, items)
        except SetupError:
            raise
        except Exception as exc:
            if not is_transient(exc):
                raise
            self._mark_transient(items, exc)
            report.failed += len(items)
            report.errors.append(_describe(exc))
            if _is_link(exc):
                report.link_error = report.link_error or _describe(exc)
            return False
        report.reached = True
        self._mark_results(items, results, report)
        return True

    def _prepare(
        self, batch: Sequence[OutboxRow]
    ) -> tuple[list[tuple[OutboxRow, str]], list[OutboxRow]]:
        """Privacy again, as the entity is now: LOCAL_ONLY is withheld, REDACTED stripped."""
        items: list[tuple[OutboxRow, str]] = []
        withheld: list[OutboxRow] = []
        levels = privacy.levels_now(self.conn, batch)
        for row in batch:
            payload = row.payload
            if row.op == "upsert":
                level = levels.get((row.entity_type, row.entity_id), "FULL")
                if level == "LOCAL_ONLY":
                    withheld.append(row)
                    continue
                payload = privacy.at_level(row.entity_type, payload, level)
            items.append((row, payload))
        return items, withheld

    def _push_isolating(
        self, remote: psycopg.Connection[Any], items: list[tuple[OutboxRow, str]]
    ) -> list[ItemResult]:
        """Push; if the server refuses the batch as a whole for a permanent reason,
        halve it until the item at fault stands alone and is rejected by itself."""
        try:
            return push_batch(remote, str(ULID()), self.device_id, _wire_items(items))
        except SetupError:
            raise  # the remote is not set up: no item is at fault
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(items) == 1:
                row = items[0][0]
                return [ItemResult(row.idempotency_key, "rejected", None, _describe(exc), None)]
            half = len(items) // 2
            return self._push_isolating(remote, items[:half]) + self._push_isolating(
                remote, items[half:]
            )

    # -- marking -------------------------------------------------------------

    def _mark_withheld(self, rows: Sequence[OutboxRow]) -> None:
        now = iso(self.clock())
        with write(self.conn):
            for row in rows:
                self.conn.execute(query("withhold"), {"now": now, "seq": row.seq})
                self._supersede_older(row, now)

    def _mark_transient(self, items: Sequence[tuple[OutboxRow, str]], exc: BaseException) -> None:
        now = self.clock()
        reason = _describe(exc)
        with write(self.conn):
            for row, _payload in items:
                decision = self.policy.after_failure(row.retry_count, now, self.rand)
                if decision.exhausted:
                    error = f"{MAX_RETRIES_EXCEEDED}: max retries exceeded (last: {reason})"
                    next_at = None
                else:
                    error = reason
                    next_at = iso(decision.next_retry_at) if decision.next_retry_at else None
                # The older rows this one stands for wait with it, so the entity
                # keeps its place in the queue.
                self.conn.execute(
                    query("fail_with_backoff"),
                    {
                        "retry_count": decision.retry_count,
                        "next_retry_at": next_at,
                        "error": error,
                        "entity_type": row.entity_type,
                        "entity_id": row.entity_id,
                        "seq": row.seq,
                    },
                )
                self._set_entity_status(row, "Failed")

    def _mark_results(
        self,
        items: Sequence[tuple[OutboxRow, str]],
        results: Sequence[ItemResult],
        report: PushReport,
    ) -> None:
        by_key = {result.key: result for result in results}
        now = iso(self.clock())
        acked: list[tuple[int, str, str, int, int]] = []
        with write(self.conn):
            for row, payload in items:
                result = by_key.get(row.idempotency_key)
                if result is None:  # the server answers every item; never drop one
                    result = ItemResult(
                        row.idempotency_key,
                        "rejected",
                        None,
                        f"{BATCH_FAILED}: no result for this item",
                        None,
                    )
                report.sent += 1
                if result.outcome in ("applied", "duplicate"):
                    if result.outcome == "applied":
                        report.applied += 1
                    else:
                        report.duplicates += 1
                    acked.append(
                        (
                            row.seq,
                            row.entity_type,
                            row.entity_id,
                            row.base_version,
                            result.version or 0,
                        )
                    )
                    continue
                self._supersede_older(row, now)
                if result.outcome == "conflict":
                    report.conflicts += 1
                    conflicts.resolve_push_conflict(
                        self.conn,
                        self.config,
                        self.device_id,
                        row,
                        payload,
                        result,
                        now,
                        self.conflicts_dir,
                    )
                else:
                    report.rejected += 1
                    reason = result.reason or "rejected by the server"
                    if not reason.startswith("ACODE-SYNC-"):
                        reason = f"{INVALID_PAYLOAD}: invalid payload: {reason}"
                    report.errors.append(f"{row.entity_type} {row.entity_id}: {reason}")
                    self.conn.execute(query("fail_for_good"), {"error": reason, "seq": row.seq})
                    self._set_entity_status(row, "Failed")
            if acked:
                outbox.acknowledge(self.conn, acked, now)
            note_contact(self.conn, now)

    def _supersede_older(self, row: OutboxRow, now: str) -> None:
        self.conn.execute(
            query("supersede_older"),
            {
                "now": now,
                "entity_type": row.entity_type,
                "entity_id": row.entity_id,
                "seq": row.seq,
            },
        )

    def _set_entity_status(self, row: OutboxRow, status: str) -> None:
        self.conn.execute(
            f"UPDATE {ENTITY_TABLE[row.entity_type]} SET sync_status = ? WHERE id = ?",
            (status, row.entity_id),
        )


def _settled(
    claimed: Sequence[OutboxRow], send: Sequence[OutboxRow], batch: Sequence[OutboxRow]
) -> int:
    """How many claimed rows a round took out of the queue: those of the batch's
    entities (the older rows it coalesced too) and those isolated as invalid."""
    sent = {(row.entity_type, row.entity_id) for row in batch}
    fit = {(row.entity_type, row.entity_id) for row in send}
    keys = [(row.entity_type, row.entity_id) for row in claimed]
    return sum(1 for key in keys if key in sent or key not in fit)


def _wire_items(items: Sequence[tuple[OutboxRow, str]]) -> str:
    """The batch as JSON text; payloads are spliced in as the JSON they already are."""
    parts = []
    for row, payload in items:
        head = json.dumps(
            {
                "key": row.idempotency_key,
                "entity_type": row.entity_type,
                "entity_id": row.entity_id,
                "op": row.op,
                "base_version": row.base_version,
                "changed_at": row.changed_at,
            }
        )
        parts.append(f'{head[:-1]}, "payload": {payload}}}')
    return "[" + ", ".join(parts) + "]"


def _is_link(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionFailed | psycopg.OperationalError | OSError | TimeoutError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionFailed):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if _is_link(exc):
        return f"{ConnectionFailed.code}: connection lost: {text}"
    if is_transient(exc):
        return f"{BATCH_FAILED}: batch failed: {text}"
    return f"{INVALID_PAYLOAD}: invalid payload: {text}"
