"""Text the CLI prints, in the user manual's shapes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acode_sync.clock import parse_iso
from acode_sync.link import Link
from acode_sync.outbox import OutboxRow, QueueCounts, QueueSummary, status_label
from acode_sync.text import decode, printable

if TYPE_CHECKING:
    # Types only: these modules load psycopg or prometheus_client.
    from acode_sync.conflicts import ConflictRecord
    from acode_sync.engine import CycleReport
    from acode_sync.health import Health

RULE = "─" * 36
TYPE_LABEL = {"chat": "chat", "message": "msg"}


def heading(title: str) -> str:
    return f"{title}\n{RULE}"


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# tabulate's "plain" layout: a header gets two columns of room, columns are
# two spaces apart, cells are stripped and left-aligned, lines end at their text.
HEADER_ROOM = 2
GAP = "  "


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain table; every cell through :func:`printable` (any client's bytes).
    Columns line up by display width (wcwidth): a CJK character or an emoji
    takes two columns.

    A table of printable ASCII (the queue's ids, states and errors, most chat
    titles) is laid out here, the way tabulate's ``plain`` format does it (a
    test holds the two equal): one character, one column. Anything else goes
    to tabulate and wcwidth, whose import costs more than the rest of a
    ``queue`` on a million rows (importlib.metadata for its version, wcwidth's
    tables: about twice a bare Python start, docs/BENCHMARKS.md issue 10)."""
    cells = [[printable(str(cell)) for cell in row] for row in rows]
    if not all(_plain(text) for text in (*headers, *(cell for row in cells for cell in row))):
        from tabulate import tabulate

        return tabulate(cells, headers=list(headers), tablefmt="plain", disable_numparse=True)
    grid = [list(headers), *([cell.strip() for cell in row] for row in cells)]
    widths = [len(header) + HEADER_ROOM for header in headers]
    for row in grid[1:]:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    return "\n".join(
        GAP.join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in grid
    )


def _plain(text: str) -> bool:
    """Printable ASCII only: as wide as it is long, nothing tabulate reads specially."""
    return text.isascii() and text.isprintable()


def breakdown(counts: QueueCounts) -> str:
    """``800 pending, 50 waiting, 3 failed`` (``0 pending`` for an empty queue)."""
    parts = [f"{counts.pending} pending"]
    others = ((counts.waiting, "waiting"), (counts.failed, "failed"))
    parts += [f"{n} {word}" for n, word in others if n]
    return ", ".join(parts)


def link_line(link: Link, now: datetime, open_rows: int) -> str | None:
    """Why the queue is not moving when the remote is unreachable."""
    if not link.down:
        return None
    return (
        f"Remote unreachable since {ago(now, link.down_since)} "
        f"(last tried {ago(now, link.last_error_at)}: {link.last_error}); "
        f"{plural(open_rows, 'item')} wait for the link."
    )


def queue_text(
    rows: Sequence[OutboxRow],
    now: datetime,
    *,
    summary: QueueSummary,
    link: Link,
    paused: bool,
    errors_only: bool,
) -> str:
    """The manual's queue table (the first rows only: ``rows``), then how many
    more there are and the summary line; Status uses the words ``status``
    counts by."""
    counts = summary.counts
    header = f"Pending Upload: {plural(counts.depth, 'item')}"
    if counts.waiting or counts.failed:
        header += f" ({breakdown(counts)})"
    lines = [heading("Sync Queue"), header, ""]
    reasons = []
    if paused and counts.depth:
        reasons.append("Sync is paused: items wait for 'acode sync resume'.")
    down = link_line(link, now, counts.depth) if counts.depth else None
    if down:
        reasons.append(down)
    if not rows:
        if reasons:
            return "\n".join(lines + reasons)
        lines.append("No errors." if errors_only else "Nothing to upload.")
        return "\n".join(lines)
    lines.append(
        table(
            ["Item", "Status", "Retries", "Last Error"],
            [
                [
                    f"{row.entity_id} ({TYPE_LABEL[row.entity_type]})",
                    status_label(row, now),
                    str(row.retry_count),
                    row.last_error or "-",
                ]
                for row in rows
            ],
        )
    )
    listed = summary.with_errors if errors_only else counts.depth
    if listed > len(rows):
        lines.append(
            f"... and {listed - len(rows)} more (--limit N shows N, --all shows every item)"
        )
    lines += ["", summary_line(summary, now)]
    footer = list(reasons)
    if counts.waiting:
        footer += [
            "Waiting items will retry with backoff.",
            "Use 'acode sync retry --force' to retry now.",
        ]
    if counts.failed:
        footer += [
            "Failed items will not retry by themselves (rejected, or out of attempts).",
            "Use 'acode sync retry' once the cause is fixed.",
        ]
    if footer:
        lines += ["", *footer]
    return "\n".join(lines)


def summary_line(summary: QueueSummary, now: datetime) -> str:
    """``By type: 2 chat, 1 msg; oldest 10m ago; next retry in 40s``."""
    types: dict[str, int] = {}
    for per_type in summary.by_type.values():
        for kind, rows in per_type.items():
            types[kind] = types.get(kind, 0) + rows
    parts = [
        "By type: "
        + ", ".join(f"{types[kind]} {TYPE_LABEL.get(kind, kind)}" for kind in sorted(types)),
        f"oldest {ago(now, summary.oldest_created_at)}",
    ]
    if summary.next_retry_at is not None:
        parts.append(f"next retry {until(now, summary.next_retry_at)}")
    return "; ".join(parts)


def until(now: datetime, stamp: str) -> str:
    """``in 40s``, ``in 2m``; ``due`` for a time already past."""
    seconds = int((parse_iso(stamp) - now).total_seconds())
    if seconds < 1:
        return "due"
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"in {seconds // size}{unit}"
    return f"in {seconds}s"


def queue_json(rows: Sequence[OutboxRow], summary: QueueSummary, limit: int | None) -> str:
    """An object: the totals (as ``status`` counts), the summary, and the first
    ``limit`` items (all with ``limit`` None)."""
    import json  # here: the text commands (status, queue) do not load it

    counts = summary.counts
    return json.dumps(
        {
            "total": counts.depth,
            "pending": counts.pending,
            "waiting": counts.waiting,
            "failed": counts.failed,
            "with_errors": summary.with_errors,
            "by_type": {
                STATE_WORD[state]: dict(sorted(per_type.items()))
                for state, per_type in summary.by_type.items()
            },
            "oldest_created_at": summary.oldest_created_at,
            "next_retry_at": summary.next_retry_at,
            "limit": limit,
            "shown": len(rows),
            "items": [
                {
                    "seq": row.seq,
                    "idempotency_key": row.idempotency_key,
                    "entity_type": row.entity_type,
                    "entity_id": row.entity_id,
                    "op": row.op,
                    "base_version": row.base_version,
                    # The queue's words (Pending, Waiting, Failed): status's figures.
                    "status": STATE_WORD[row.state],
                    "retry_count": row.retry_count,
                    "next_retry_at": row.next_retry_at,
                    "last_error": row.last_error,
                    "changed_at": row.changed_at,
                    "created_at": row.created_at,
                }
                for row in rows
            ],
        },
        indent=2,
        default=_stored_bytes,
    )


def _stored_bytes(value: object) -> str:
    """A BLOB a client stored where text belongs (the sqlite3 shell can): as its
    bytes read as text, the way every other column of ours reads them."""
    if isinstance(value, bytes):
        return decode(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


STATE_WORD = {"pending": "Pending", "waiting": "Waiting", "failed": "Failed"}


def ago(now: datetime, stamp: str | None) -> str:
    """``30s ago``, ``1m ago``, ``2h ago``, ``3d ago``; ``never`` for no time."""
    if stamp is None:
        return "never"
    seconds = max(0, int((now - parse_iso(stamp)).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


POLICY_LABEL = {
    "last_write_wins": "last-write",
    "local_wins": "local-wins policy",
    "remote_wins": "remote-wins policy",
}


def conflicts_text(records: Sequence[ConflictRecord], now: datetime, root: Path) -> str:
    """The manual's conflict block, one per conflict."""
    acked = sum(1 for record in records if record.acknowledged_at)
    found = f"{plural(len(records), 'conflict')} found"
    lines = [heading("Conflicts"), found + (f" ({acked} acknowledged)" if acked else "")]
    for record in records:
        kind = "Chat" if record.entity_type == "chat" else "Message"
        label = record.title()
        label = label if len(label) <= 40 else label[:37] + "..."
        mark = f"#{record.id}, acknowledged" if record.acknowledged_at else f"#{record.id}"
        lines += [
            "",
            f'{kind}: {printable(record.entity_id)} "{printable(label)}"  [{mark}]',
            f"  Local version: {record.local_version} "
            f"(modified {ago(now, record.local_changed_at)})",
            f"  Remote version: {record.remote_version} "
            f"(modified {ago(now, record.remote_changed_at)})",
            f"  Resolution: {record.winner.capitalize()} wins "
            f"({POLICY_LABEL.get(record.policy, record.policy)})",
            *(
                [f"  Acknowledged: {ago(now, record.acknowledged_at)}"]
                if record.acknowledged_at
                else []
            ),
        ]
        if record.preserved_path:
            path = Path(record.preserved_path)
            shown = path.relative_to(root) if path.is_relative_to(root) else path
            side = "Remote version" if record.winner == "local" else "Local changes"
            lines += ["", f"  {side} preserved in: {shown}"]
    if len(records) > acked:
        lines += ["", "Acknowledge with 'acode sync conflicts --ack ID' (or #N) or '--all'."]
    return "\n".join(lines)


def conflicts_json(records: Sequence[ConflictRecord]) -> str:
    import json

    def side(payload: str | None) -> Any:
        return json.loads(payload) if payload else None

    return json.dumps(
        [
            {
                "id": r.id,
                "entity_type": r.entity_type,
                "entity_id": r.entity_id,
                "detected_at": r.detected_at,
                "detected_by": r.detected_by,
                "policy": r.policy,
                "winner": r.winner,
                "local": {
                    "version": r.local_version,
                    "changed_at": r.local_changed_at,
                    "payload": side(r.local_payload),
                },
                "remote": {
                    "version": r.remote_version,
                    "changed_at": r.remote_changed_at,
                    "payload": side(r.remote_payload),
                },
                "preserved_path": r.preserved_path,
                "acknowledged_at": r.acknowledged_at,
            }
            for r in records
        ],
        indent=2,
    )


def status_text(health: Health, now: datetime) -> str:
    """The user manual's status block."""
    queue = QueueCounts(health.pending, health.waiting, health.failed)
    lines = [
        heading("Sync Status"),
        f"Mode: {health.mode.capitalize()}",
        *([f"  Why: {health.reason}"] if health.reason else []),
        f"Last Sync: {ago(now, health.last_sync_at)}",
        f"Queue: {breakdown(queue)}",
        "",
        "Local → Remote:",
        f"  Pending: {health.pending}",
        # Only when there are some, so the manual's block keeps its shape.
        *([f"  Waiting to retry: {health.waiting}"] if health.waiting else []),
        f"  Synced today: {health.synced_today}",
        f"  Failed: {health.failed}",
        "",
        "Remote → Local:",
        f"  Last pull: {ago(now, health.last_pull_at)}",
        f"  Downloaded today: {health.downloaded_today}",
    ]
    if health.conflicts:
        lines += ["", f"Conflicts: {health.conflicts} (see 'acode sync conflicts')"]
    return "\n".join(lines)


def cycle_report(
    report: CycleReport, *, quiet: bool, announced: bool = False
) -> list[tuple[str, bool]]:
    """What ``now``/``once``/``resume`` print of a cycle, in order, each line
    with whether it goes to standard error. ``quiet`` (``once``): only problems;
    ``announced``: ``Syncing...`` was printed before the cycle started."""
    lines: list[tuple[str, bool]] = []
    if report.disabled or report.paused:
        if not quiet:
            lines.append(
                (
                    "Sync is disabled (sync.enabled: false in .agent/config.yml)."
                    if report.disabled
                    else "Sync is paused. Changes queue locally; 'acode sync resume' to resume.",
                    False,
                )
            )
        return lines
    push = report.push
    if not quiet:
        lines += [
            *([] if announced else [("Syncing...", False)]),
            (f"  ↑ Uploaded: {plural(push.uploaded, 'item')}", False),
            (f"  ↓ Downloaded: {plural(report.pull.applied, 'item')}", False),
        ]
        conflicts = push.conflicts + report.pull.conflicts
        if conflicts:
            lines.append((f"  ! Conflicts: {conflicts} (see 'acode sync conflicts')", False))
    lines += [(f"  ✗ {error}", True) for error in push.errors]
    if report.incomplete:
        failed = push.failed + push.rejected
        lines.append(
            (f"Sync incomplete: {failed} item(s) failed (see 'acode sync queue --errors').", True)
        )
    elif not quiet:
        lines.append(("Sync complete.", False))
    return lines
