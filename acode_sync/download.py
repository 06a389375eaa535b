"""The download path: the cursor-based puller (the specification's
InboxProcessor).

A page of the server's change log lands in ``sync_inbox`` together with the
new cursor in one local transaction; then, in one guarded transaction, this
device's own changes are taken as versions (not re-applied), changes that meet
local pending edits go to the conflict resolver, and the rest are applied set
based (``acode_sync.apply``). A crash between the two steps re-applies
idempotently: the apply never goes back to an older version.

Starting over. A cursor ahead of the server's head (the server was restored
from a backup) is reset to 0: the whole log comes again, and the apply keeps
whatever is newer locally, pending writes included. A workspace restored from a
backup has a cursor behind and lacks its own later writes, which the server
sends without payload (the device's own): those rows are fetched again with
their payload and applied like another device's.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg

from acode_sync import apply, conflicts, outbox
from acode_sync.clock import iso
from acode_sync.link import note_contact
from acode_sync.mover import Mover
from acode_sync.pacing import Pacer
from acode_sync.progress import DOWNLOAD, Progress
from acode_sync.queries import query
from acode_sync.remote import head_seq, pull_head, pull_page
from acode_sync.workspace import write

log = logging.getLogger(__name__)


@dataclass
class PullReport:
    """What one pull did: pages fetched, changes received, and what became of them."""

    pages: int = 0
    received: int = 0
    applied: int = 0
    skipped: int = 0
    conflicts: int = 0


@dataclass(eq=False)
class Puller(Mover):
    """Pull pages of the change log after the cursor; apply them under the guard."""

    def pull(
        self,
        remote: psycopg.Connection[Any],
        *,
        max_pages: int | None = None,
        progress: Progress | None = None,
    ) -> PullReport:
        report = PullReport()
        self.apply_inbox(report)  # whatever a crash left between the two steps
        if progress is not None:
            start = self.conn.execute("SELECT pull_cursor FROM sync_state").fetchone()[0]
            progress.total(DOWNLOAD, max(0, head_seq(remote) - start))
        page_size = self.config.download.page_size
        caught_up = False
        ahead: tuple[int, Future[list[tuple[Any, ...]]]] | None = None
        with (
            ThreadPoolExecutor(1, thread_name_prefix="acode-sync-pull") as wire,
            Pacer(self.conn) as pacer,
        ):
            while max_pages is None or report.pages < max_pages:
                cursor = self.conn.execute("SELECT pull_cursor FROM sync_state").fetchone()[0]
                if ahead is not None and ahead[0] == cursor:
                    rows = ahead[1].result()
                else:
                    rows = pull_page(remote, cursor, page_size, self.device_id)
                ahead = None
                if not rows and report.pages == 0 and cursor > 0:
                    cursor = self._start_over_if_ahead(remote, cursor)
                    rows = (
                        pull_page(remote, cursor, page_size, self.device_id) if cursor == 0 else []
                    )
                fetched = len(rows)
                last = rows[-1][0] if rows else cursor
                rows = self._to_store(remote, rows, cursor, last, report)
                if fetched == page_size and (max_pages is None or report.pages + 1 < max_pages):
                    # The next page comes while this one is stored and applied.
                    ahead = (last, wire.submit(pull_page, remote, last, page_size, self.device_id))
                self._store_and_apply(rows, last, report, pacer)
                if not fetched:
                    caught_up = True
                    break
                report.pages += 1
                report.received += fetched
                if progress is not None:
                    progress.advance(DOWNLOAD, fetched)
                if fetched < page_size:
                    caught_up = True
                    break
        if caught_up:  # the log has nothing after the cursor
            self.recapture()
        return report

    def _to_store(
        self,
        remote: psycopg.Connection[Any],
        rows: list[tuple[Any, ...]],
        cursor: int,
        last: int,
        report: PullReport,
    ) -> list[tuple[Any, ...]]:
        """The rows of a page the inbox takes: not this device's own changes at a
        version it has; lost own changes (a restored workspace) with payloads."""
        known = self._known_own(rows)
        if known:
            rows = [row for row in rows if row[0] not in known]
            report.skipped += len(known)
        lost = self._lost_own(rows)
        if lost:
            page = pull_page(remote, cursor, len(rows) + len(known), None)
            again = [row for row in page if row[0] <= last and row[0] not in known]
            rows = self._with_payloads(again, lost)
        return rows

    def _store_and_apply(
        self, rows: list[tuple[Any, ...]], last: int, report: PullReport, pacer: Pacer
    ) -> None:
        """Store the page in the inbox and apply it, a slice per write
        transaction (the cursor moves with each), paced for other writers
        (``acode_sync.pacing``)."""
        done = 0
        while True:
            part = rows[done : done + pacer.rows]
            done += len(part)
            started = pacer.before()
            now = iso(self.clock())
            with apply.applying_remote(self.conn):
                if part:
                    self.conn.executemany(query("insert_inbox_page"), part)
                self.conn.execute(
                    "UPDATE sync_state SET pull_cursor = ?, last_pull_at = ? WHERE id = 1",
                    (part[-1][0] if done < len(rows) else last, now),
                )
                note_contact(self.conn, now)
                if part:
                    self._apply_pending(report, now, part)
                pacer.held(started, len(part))
            pacer.released()
            if done >= len(rows):
                return

    def _start_over_if_ahead(self, remote: psycopg.Connection[Any], cursor: int) -> int:
        """0 when the cursor is ahead of the server's head (the log it counted
        is gone: the server was restored), else the cursor unchanged."""
        head = pull_head(remote)
        if head is None or cursor <= head:
            return cursor
        log.warning(
            "pull cursor %d is ahead of the server's last change %d: pulling everything again",
            cursor,
            head,
        )
        with write(self.conn):
            self.conn.execute("UPDATE sync_state SET pull_cursor = 0 WHERE id = 1")
            # The restored server hands out these seqs again, for other changes.
            self.conn.execute("DELETE FROM sync_inbox WHERE status <> 'Pending'")
        return 0

    def _known_own(self, rows: list[tuple[Any, ...]]) -> set[int]:
        """Seqs of this device's own changes (sent without payload) at a version
        the entity has already: the push's answer gave it. Nothing is left to do
        for them, so they never reach the inbox. One statement for the page."""
        own = [
            [seq, entity_type, entity_id, version]
            for seq, _key, entity_type, entity_id, _op, version, origin, _at, payload in rows
            if origin == self.device_id and payload is None
        ]
        if not own:
            return set()
        found = self.conn.execute(query("own_rows_known"), {"rows": json.dumps(own)})
        return {int(seq) for (seq,) in found}

    def _lost_own(self, rows: list[tuple[Any, ...]]) -> set[int]:
        """Seqs of this device's own upserts (sent without payload) at a version
        this workspace does not have, with nothing of the entity waiting to go:
        a workspace restored from a backup made before them."""
        lost: set[int] = set()
        for seq, _key, entity_type, entity_id, op, version, origin, _at, payload in rows:
            if origin != self.device_id or payload is not None or op != "upsert":
                continue
            table = "chats" if entity_type == "chat" else "messages"
            have = self.conn.execute(
                f"SELECT version FROM {table} WHERE id = ?", (entity_id,)
            ).fetchone()
            if have is not None and have[0] >= version:
                continue
            if not outbox.has_open(self.conn, (entity_type, entity_id)):
                lost.add(seq)
        return lost

    def _with_payloads(self, rows: list[tuple[Any, ...]], lost: set[int]) -> list[tuple[Any, ...]]:
        """The page again, with payloads; the rows found lost get an origin that
        is not this device's, so they are applied rather than taken as versions."""
        restored = f"{self.device_id}:restored"
        return [(*row[:6], restored, *row[7:]) if row[0] in lost else row for row in rows]

    def recapture(self) -> None:
        """Capture again the messages of chats whose level this pull changed."""
        if self.conn.execute("SELECT 1 FROM sync_recapture LIMIT 1").fetchone() is None:
            return
        with write(self.conn):
            if self.conn.execute(query("recapture_level_changed")).fetchone() is not None:
                self.conn.execute(query("recapture_messages"))
                self.conn.execute(query("recapture_mark_pending"))
            self.conn.execute("DELETE FROM sync_recapture")

    def apply_inbox(self, report: PullReport) -> None:
        """Apply every pending inbox row in one guarded transaction."""
        waiting = "SELECT 1 FROM sync_inbox WHERE status = 'Pending' LIMIT 1"
        if self.conn.execute(waiting).fetchone() is None:
            return
        now = iso(self.clock())
        with apply.applying_remote(self.conn):
            self._apply_pending(report, now)

    def _apply_pending(
        self, report: PullReport, now: str, part: list[tuple[Any, ...]] | None = None
    ) -> None:
        """Apply the pending inbox rows, inside the caller's guarded transaction.
        ``part``: the rows just stored (all that is pending): the statements for
        kinds of change it does not hold are not run, which keeps a small slice
        cheap."""
        kinds = None if part is None else {(row[2], row[4]) for row in part}
        if part is None or any(row[6] == self.device_id for row in part):
            # This device's own changes come back through the log: not re-applied,
            # but their version is taken (and rows captured on the one before are
            # rebased onto it): what the server did of our own change, such as
            # withdrawing the messages of a chat we withdrew, is no conflict.
            for statement in (
                query("own_versions_rebase_chats"),
                query("own_versions_chats"),
                query("own_versions_rebase_messages"),
                query("own_versions_messages"),
            ):
                self.conn.execute(statement, {"me": self.device_id})
            own = self.conn.execute(
                "UPDATE sync_inbox SET status = 'Skipped', applied_at = ? "
                "WHERE status = 'Pending' AND origin_device = ?",
                (now, self.device_id),
            ).rowcount
            report.skipped += own
        if kinds is None or {("chat", "upsert"), ("chat", "withdraw")} & kinds:
            self.conn.execute(query("note_chat_levels"))
        # Conflicts: remote changes for entities with local changes pending,
        # found through the outbox's index of open rows, one probe per change.
        if outbox.has_open(self.conn):
            for change in self.conn.execute(query("inbox_conflicting")).fetchall():
                self._resolve(change, now, report)
        applied, skipped = apply.apply_inbox(self.conn, now, kinds)
        report.applied += applied
        report.skipped += skipped

    def _resolve(self, change: sqlite3.Row, now: str, report: PullReport) -> None:
        status = conflicts.resolve_pull_conflict(
            self.conn, self.config, self.device_id, change, now, self.conflicts_dir
        )
        if status == "Skipped":
            report.skipped += 1
        else:
            report.conflicts += 1
        self.conn.execute(
            "UPDATE sync_inbox SET status = ?, applied_at = ? WHERE seq = ?",
            (status, now, change["seq"]),
        )
