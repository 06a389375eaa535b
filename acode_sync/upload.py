"""The upload path: the batch mover (the specification's OutboxProcessor).

One round of :meth:`Uploader.push`:

1. claim due outbox rows in ``seq`` order, up to the newest row when the push
   began (``claim.claim_due``; later rows wait for the next cycle): a row still
   waiting out a backoff holds back only what depends on it; rows that
   failed for good (rejected, or out of attempts) are skipped: they wait for
   ``retry`` and never block the queue. Once a batch of the round was
   answered, rows that failed only because the link broke are due again;
2. coalesce (newest row per entity, at its oldest row's position) and cut a
   batch by count and bytes;
3. re-check privacy against the entity as it is now;
4. send the batch: one round trip, one server transaction (``acode_sync.push``),
   overlapped with the local work of the batches before and after it;
5. mark every result, in short paced local transactions (``acode_sync.pacing``).

A failure of the link during a batch marks that batch Failed with a backoff
(its retry state lives in the rows, so it survives restarts); a connection
that cannot be made at all changes nothing: being offline must not use up
attempts. A batch the server refuses as a whole for a permanent reason is
split until the bad item stands alone, so one bad item never sinks the rest.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from ulid import ULID

from acode_sync import conflicts, outbox, privacy
from acode_sync.apply import ENTITY_TABLE
from acode_sync.batching import coalesce, take_batch
from acode_sync.claim import Claim, claim_due
from acode_sync.clock import iso
from acode_sync.errors import (
    BATCH_FAILED,
    INVALID_PAYLOAD,
    MAX_RETRIES_EXCEEDED,
    SetupError,
)
from acode_sync.link import note_contact
from acode_sync.mover import Mover
from acode_sync.outbox import OutboxRow
from acode_sync.pacing import MARK_RUN_S, Pacer
from acode_sync.progress import UPLOAD, Progress
from acode_sync.queries import query
from acode_sync.remote import ItemResult, Pushed, push_batch
from acode_sync.retry import RetryPolicy, describe, is_link, is_transient
from acode_sync.rounds import PushReport as PushReport
from acode_sync.rounds import Round, wire_items
from acode_sync.text import printable
from acode_sync.validate import check_items
from acode_sync.workspace import write

log = logging.getLogger(__name__)

Rand = Callable[[], float]


@dataclass(eq=False)
class Uploader(Mover):
    """The batch mover: claim, coalesce, check, send, mark (see the module docstring)."""

    rand: Rand = field(default=random.random, kw_only=True)

    def __post_init__(self) -> None:
        self.policy = RetryPolicy.from_config(self.config.retry)
        self.pacer = Pacer(self.conn, idle_run_s=MARK_RUN_S)
        self.upto: int | None = None  # this push's newest row; rows captured later wait

    def push(
        self,
        remote: psycopg.Connection[Any],
        *,
        ignore_backoff: bool = False,
        max_batches: int | None = None,
        progress: Progress | None = None,
    ) -> PushReport:
        """Send every due row; stop early when the link fails. ``progress`` hears
        of every batch once it is marked (a stop it asks for takes effect before
        the next batch goes; the batch in flight is answered and marked).

        The round trips overlap the local work: while batch k is on the wire,
        batch k-1's results are marked and batch k+1 is claimed (after k's rows,
        only when k's claim held nothing back) and made ready; k+1 goes once k
        is answered, unless it shares an entity with k (then it is planned
        again after k is marked). Nothing goes before the batch ahead of it
        was answered, so a failure stops the queue where it stopped before."""
        report = PushReport()
        self.upto = outbox.max_seq(self.conn)  # a writer faster than a round trip ends too
        if progress is not None:
            figures = outbox.counts(self.conn)
            progress.total(UPLOAD, figures.pending + figures.waiting)
        answered: list[tuple[Round, Pushed]] = []
        untold = [0]  # rows marked, not told to ``progress`` yet

        def mark() -> None:
            while answered:
                done, pushed = answered.pop()
                self._mark_results(done.items, pushed, report)
                untold[0] += done.settled()

        def tell(extra: int = 0) -> None:
            count, untold[0] = untold[0] + extra, 0
            if progress is not None and count:
                progress.advance(UPLOAD, count)

        def more() -> bool:
            return max_batches is None or report.batches < max_batches

        with ThreadPoolExecutor(1, thread_name_prefix="acode-sync-push") as wire, self.pacer:
            try:
                current = self._plan(0, report, ignore_backoff)
                while current is not None and more():
                    if not current.items:
                        mark()
                        tell()
                        self._send_nothing(current, report, progress)
                        current = self._plan(0, report, ignore_backoff)
                        continue
                    report.batches += 1
                    self._mark_withheld(current.withheld, report)
                    flight = wire.submit(self._push_isolating, remote, current.items, current.wire)
                    mark()  # the batch before, while this one is on the wire
                    ahead = None
                    if current.clean and more():
                        ahead = self._plan(current.last_seq, report, ignore_backoff)
                    results = self._answer(flight, current, report)
                    if results is None:
                        break
                    answered.append((current, results))
                    tell()  # a stop asked for here marks this batch first (finally)
                    if ahead is not None and not ahead.shares_entity(current):
                        current = ahead
                        continue
                    mark()
                    tell(ahead.isolated() if ahead else 0)
                    current = self._plan(0, report, ignore_backoff)
            finally:
                mark()
                tell()  # a stop asked for here is raised once this batch is marked
        return report

    def _plan(self, after: int, report: PushReport, ignore_backoff: bool) -> Round | None:
        """The next round: claim, coalesce, isolate the unfit, cut the batch,
        re-check privacy, build the JSON. None when nothing is due."""
        claim = claim_due(
            self.conn,
            self.clock(),
            self.config.upload.batch_size,
            after=after,
            upto=self.upto,
            ignore_backoff=ignore_backoff,
            # Backoff protects a struggling server; once it has answered a
            # batch, what failed only because the link broke goes too, so
            # the queue does not stall behind the link's backoff.
            release_link_failures=report.reached,
        )
        if not claim.rows:
            return None
        send = self._isolate_invalid(claim, report)
        batch = (
            take_batch(send, self.config.upload.batch_size, self.config.upload.batch_bytes_max)
            if send
            else []
        )
        items, withheld = self._prepare(batch, claim.levels)
        wire = wire_items(items) if items else ""
        clean = claim.clean and len(batch) == len(send)
        return Round(claim.rows, send, batch, items, withheld, wire, clean)

    def _send_nothing(self, plan: Round, report: PushReport, progress: Progress | None) -> None:
        """A round with nothing to send: its rows are unfit (Failed) or withheld."""
        if plan.batch:
            report.batches += 1
            self._mark_withheld(plan.withheld, report)
        if progress is not None:
            progress.advance(UPLOAD, plan.settled() if plan.batch else len(plan.rows))

    def _answer(self, flight: Future[Pushed], plan: Round, report: PushReport) -> Pushed | None:
        """The batch's results; None when the link failed (marked for a retry)."""
        try:
            results = flight.result()
        except SetupError:
            raise
        except Exception as exc:
            if not is_transient(exc):
                raise
            self._mark_transient(plan.items, exc)
            report.failed += len(plan.items)
            report.errors.append(describe(exc))
            if is_link(exc):
                report.link_error = report.link_error or describe(exc)
            return None
        report.reached = True
        return results

    def _isolate_invalid(self, claim: Claim, report: PushReport) -> list[OutboxRow]:
        """The claim's rows coalesced, less the unfit: marked Failed for good (ACODE-SYNC-005)."""
        rows = coalesce(claim.rows)
        reasons = check_items(rows, claim.unfit, self.config.upload.item_bytes_max)
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

    def _prepare(
        self, batch: Sequence[OutboxRow], levels: dict[int, str]
    ) -> tuple[list[tuple[OutboxRow, str]], list[OutboxRow]]:
        """Privacy as the entity is now (``levels``, by seq): LOCAL_ONLY withheld, REDACTED cut."""
        items: list[tuple[OutboxRow, str]] = []
        withheld: list[OutboxRow] = []
        for row in batch:
            payload = row.payload
            if row.op == "upsert":
                level = levels.get(row.seq, "FULL")
                if level == "LOCAL_ONLY":
                    withheld.append(row)
                    continue
                payload = privacy.at_level(row.entity_type, payload, level)
            items.append((row, payload))
        return items, withheld

    def _push_isolating(
        self, remote: psycopg.Connection[Any], items: list[tuple[OutboxRow, str]], wire: str = ""
    ) -> Pushed:
        """Push (``wire``: the items' JSON, when made already); if the server
        refuses the batch as a whole for a permanent reason, halve it until the
        item at fault stands alone and is rejected by itself."""
        try:
            return push_batch(remote, str(ULID()), self.device_id, wire or wire_items(items))
        except SetupError:
            raise  # the remote is not set up: no item is at fault
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(items) == 1:
                key = items[0][0].idempotency_key
                return Pushed([ItemResult(key, "rejected", None, describe(exc), None)])
            half = len(items) // 2
            first, second = (self._push_isolating(remote, p) for p in (items[:half], items[half:]))
            return Pushed(first.results + second.results)

    # -- marking -------------------------------------------------------------

    def _mark_withheld(self, rows: Sequence[OutboxRow], report: PushReport) -> None:
        if not rows:
            return
        report.withheld += len(rows)
        now = iso(self.clock())
        with write(self.conn):
            for row in rows:
                self.conn.execute(query("withhold"), {"now": now, "seq": row.seq})
                self._supersede_older(row, now)

    def _mark_transient(self, items: Sequence[tuple[OutboxRow, str]], exc: BaseException) -> None:
        now = self.clock()
        reason = describe(exc)
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
        pushed: Pushed,
        report: PushReport,
    ) -> None:
        """Mark a batch's results, a slice per write transaction, paced for other
        writers (``acode_sync.pacing``); a crash between slices leaves the rest
        Pending, to be answered as duplicates next time. The last one moves the
        pull cursor past the batch's own changes (``pull_past_own_push``)."""
        by_key = {result.key: result for result in pushed.results}
        done = 0
        while done < len(items):
            part = items[done : done + self.pacer.rows]
            done += len(part)
            started = self.pacer.before()
            with write(self.conn):
                self._mark_part(part, by_key, report)
                if done == len(items) and (span := pushed.span()):
                    self.conn.execute(query("pull_past_own_push"), span)
                self.pacer.held(started, len(part))
            self.pacer.released()

    def _mark_part(
        self,
        items: Sequence[tuple[OutboxRow, str]],
        by_key: dict[str, ItemResult],
        report: PushReport,
    ) -> None:
        now = iso(self.clock())
        acked: list[tuple[int, str, str, int, int]] = []
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
                    (row.seq, row.entity_type, row.entity_id, row.base_version, result.version or 0)
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
