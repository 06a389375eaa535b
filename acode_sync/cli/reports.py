"""The commands that read the state: ``status``, ``queue``, ``conflicts``
(and acknowledging them) and ``metrics``. They work on a read-only workspace.

``health`` (prometheus_client) and ``conflicts`` (psycopg, through ``remote``)
are imported inside the commands that use them: ``acode chat add`` loads this
module too, and must start fast.
"""

from __future__ import annotations

import sqlite3

import click

from acode_sync.cli import formatting
from acode_sync.cli._common import count_option, session, workspace_option
from acode_sync.clock import iso, utcnow
from acode_sync.errors import SyncIncomplete, UsageError
from acode_sync.link import read as read_link
from acode_sync.outbox import queue as outbox_queue
from acode_sync.outbox import summary as outbox_summary

QUEUE_LIMIT = 20


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--check", is_flag=True, help="Exit 1 when sync is unhealthy (for monitoring).")
@workspace_option
def status(as_json: bool, check: bool) -> None:
    """Sync mode, queue, and what moved today."""
    from acode_sync.health import figures

    s = session()
    now = utcnow()
    health = figures(s.reader, now, s.config)
    if as_json:
        import json  # here: `status` as text does not load it

        click.echo(json.dumps(health.as_json(), indent=2))
    else:
        click.echo(formatting.status_text(health, now))
    if check and not health.healthy:
        for problem in health.problems:
            click.echo(f"Unhealthy: {problem}", err=True)
        raise SyncIncomplete("unhealthy")


@click.command()
@click.option("--errors", "errors_only", is_flag=True, help="Only items with an error.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@count_option("--limit", "limit", QUEUE_LIMIT, "Show the first N items.")
@click.option("--all", "show_all", is_flag=True, help="Show every item (overrides --limit).")
@workspace_option
def queue(errors_only: bool, as_json: bool, limit: int, show_all: bool) -> None:
    """The pending and failed upload items: a summary and the first ones."""
    s = session()
    shown = None if show_all else limit
    rows = outbox_queue(s.reader, errors_only=errors_only, limit=shown)
    summary = outbox_summary(s.reader, pending_errors=errors_only)
    if as_json:
        click.echo(formatting.queue_json(rows, summary, shown))
        return
    text = formatting.queue_text(
        rows,
        utcnow(),
        summary=summary,
        link=read_link(s.reader),
        paused=_paused(s.reader) or not s.config.enabled,
        errors_only=errors_only,
    )
    click.echo(text)


@click.command(name="conflicts")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--ack",
    "ack_id",
    metavar="ID",
    help="Acknowledge a conflict: its number (#N, or N) or the chat's or message's id.",
)
@click.option("--all", "ack_all", is_flag=True, help="Acknowledge every conflict.")
@click.option("--history", is_flag=True, help="Include acknowledged conflicts (marked so).")
@workspace_option
def conflicts_(as_json: bool, ack_id: str | None, ack_all: bool, history: bool) -> None:
    """Conflicts with both versions, the resolution and where the loser is kept."""
    from acode_sync import conflicts

    s = session()
    now = utcnow()
    if ack_id is not None or ack_all:
        if ack_id is not None and ack_all:
            raise UsageError("give --ack ID or --all, not both")
        if ack_id is None:
            count = conflicts.acknowledge(s.conn, None, iso(now))
        else:
            count = sum(
                conflicts.acknowledge(s.conn, number, iso(now))
                for number in _conflict_numbers(s.conn, ack_id)
            )
        click.echo(f"Acknowledged {formatting.plural(count, 'conflict')}.")
        return
    records = conflicts.list_conflicts(s.reader, include_acknowledged=history)
    if as_json:
        click.echo(formatting.conflicts_json(records))
    else:
        click.echo(formatting.conflicts_text(records, now, s.workspace.root))


def _conflict_numbers(conn: sqlite3.Connection, given: str) -> list[int]:
    """The open conflicts ``--ack`` means: ``#N`` or ``N`` is conflict N (as the
    listing shows it), anything else a chat's or message's id (all its open
    conflicts). A UsageError when there is none."""
    number = given.removeprefix("#")
    if (
        number.isdigit()
        and not conn.execute(
            "SELECT 1 FROM sync_conflicts WHERE entity_id = ? LIMIT 1", (given,)
        ).fetchone()
    ):
        found = conn.execute(
            "SELECT id FROM sync_conflicts WHERE id = ? AND acknowledged_at IS NULL",
            (int(number),),
        ).fetchall()
        if not found:
            raise UsageError(f"no unacknowledged conflict #{number}")
    else:
        found = conn.execute(
            "SELECT id FROM sync_conflicts WHERE entity_id = ? AND acknowledged_at IS NULL "
            "ORDER BY id",
            (given,),
        ).fetchall()
        if not found:
            raise UsageError(f"no unacknowledged conflict of {given} (give its id or #N)")
    return [int(row[0]) for row in found]


@click.command()
@workspace_option
def metrics() -> None:
    """The health figures in Prometheus text format."""
    from acode_sync.health import figures, metrics_text

    s = session()
    click.echo(metrics_text(figures(s.reader, utcnow(), s.config)), nl=False)


def _paused(conn: sqlite3.Connection) -> bool:
    # engine.is_paused's one query, without importing the engine (psycopg) for it.
    row = conn.execute("SELECT paused FROM sync_state WHERE id = 1").fetchone()
    return bool(row and row[0])
