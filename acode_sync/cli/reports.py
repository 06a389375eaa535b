"""The commands that read the state: ``status``, ``queue``, ``conflicts``
(and acknowledging them) and ``metrics``. They work on a read-only workspace."""

from __future__ import annotations

import json

import click

from acode_sync import conflicts
from acode_sync.cli import formatting
from acode_sync.cli._common import session, workspace_option
from acode_sync.clock import iso, utcnow
from acode_sync.engine import is_paused
from acode_sync.errors import SyncIncomplete, UsageError
from acode_sync.health import figures, metrics_text
from acode_sync.link import read as read_link
from acode_sync.outbox import counts as outbox_counts
from acode_sync.outbox import queue as outbox_queue


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--check", is_flag=True, help="Exit 1 when sync is unhealthy (for monitoring).")
@workspace_option
def status(as_json: bool, check: bool) -> None:
    """Sync mode, queue, and what moved today."""
    s = session()
    now = utcnow()
    health = figures(s.reader, now, s.config)
    if as_json:
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
@workspace_option
def queue(errors_only: bool, as_json: bool) -> None:
    """The pending and failed upload items."""
    s = session()
    rows = outbox_queue(s.reader, errors_only=errors_only)
    if as_json:
        click.echo(formatting.queue_json(rows))
        return
    text = formatting.queue_text(
        rows,
        utcnow(),
        counts=outbox_counts(s.reader),
        link=read_link(s.reader),
        paused=is_paused(s.reader) or not s.config.enabled,
        errors_only=errors_only,
    )
    click.echo(text)


@click.command(name="conflicts")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--ack", "ack_id", type=int, metavar="ID", help="Acknowledge one conflict.")
@click.option("--all", "ack_all", is_flag=True, help="Acknowledge every conflict.")
@click.option("--history", is_flag=True, help="Include acknowledged conflicts.")
@workspace_option
def conflicts_(as_json: bool, ack_id: int | None, ack_all: bool, history: bool) -> None:
    """Conflicts with both versions, the resolution and where the loser is kept."""
    s = session()
    now = utcnow()
    if ack_id is not None or ack_all:
        if ack_id is not None and ack_all:
            raise UsageError("give --ack ID or --all, not both")
        count = conflicts.acknowledge(s.conn, ack_id, iso(now))
        if ack_id is not None and count == 0:
            raise UsageError(f"no unacknowledged conflict #{ack_id}")
        click.echo(f"Acknowledged {formatting.plural(count, 'conflict')}.")
        return
    records = conflicts.list_conflicts(s.reader, include_acknowledged=history)
    if as_json:
        click.echo(formatting.conflicts_json(records))
    else:
        click.echo(formatting.conflicts_text(records, now, s.workspace.root))


@click.command()
@workspace_option
def metrics() -> None:
    """The health figures in Prometheus text format."""
    s = session()
    click.echo(metrics_text(figures(s.reader, utcnow(), s.config)), nl=False)
