"""Text the CLI prints, in the user manual's shapes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

from acode_sync.outbox import OutboxRow

RULE = "─" * 36
TYPE_LABEL = {"chat": "chat", "message": "msg"}


def heading(title: str) -> str:
    return f"{title}\n{RULE}"


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    return tabulate(rows, headers=list(headers), tablefmt="plain", disable_numparse=True)


def queue_text(rows: Sequence[OutboxRow], *, errors_only: bool) -> str:
    lines = [heading("Sync Queue"), f"Pending Upload: {plural(len(rows), 'item')}", ""]
    if not rows:
        lines.append("No errors." if errors_only else "Nothing to upload.")
        return "\n".join(lines)
    lines.append(
        table(
            ["Item", "Status", "Retries", "Last Error"],
            [
                [
                    f"{row.entity_id} ({TYPE_LABEL[row.entity_type]})",
                    row.status,
                    str(row.retry_count),
                    row.last_error or "-",
                ]
                for row in rows
            ],
        )
    )
    if any(row.status == "Failed" for row in rows):
        lines += [
            "",
            "Failed items will retry with backoff.",
            "Use 'acode sync retry --force' to retry now.",
        ]
    return "\n".join(lines)


def queue_json(rows: Sequence[OutboxRow]) -> str:
    return json.dumps(
        [
            {
                "seq": row.seq,
                "idempotency_key": row.idempotency_key,
                "entity_type": row.entity_type,
                "entity_id": row.entity_id,
                "op": row.op,
                "base_version": row.base_version,
                "status": row.status,
                "retry_count": row.retry_count,
                "next_retry_at": row.next_retry_at,
                "last_error": row.last_error,
                "changed_at": row.changed_at,
                "created_at": row.created_at,
            }
            for row in rows
        ],
        indent=2,
    )
