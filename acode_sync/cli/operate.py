"""Operating sync from the command line: status, pause/resume, retry, run, metrics.

Kept apart from ``cli/sync.py`` (setup and one-shot cycles) so each file stays
small; :func:`register` adds these commands to the ``acode-sync`` group. The
commands are thin: the figures come from ``acode_sync.health``, the loop and
the re-queue from ``acode_sync.runner``; errors are turned into messages and
exit codes by ``AcodeGroup``, in one place.
"""

from __future__ import annotations

import json
from datetime import datetime

import click

from acode_sync.cli import formatting
from acode_sync.cli._common import session, workspace_option
from acode_sync.clock import utcnow
from acode_sync.engine import is_paused
from acode_sync.errors import SyncIncomplete
from acode_sync.health import Health, figures, metrics_text
from acode_sync.outbox import QueueCounts
from acode_sync.outbox import counts as outbox_counts
from acode_sync.runner import Runner, outcome, pending_entities, requeue_failed, set_paused
from acode_sync.text import printable


def status_text(health: Health, now: datetime) -> str:
    """The user manual's status block."""
    queue = QueueCounts(health.pending, health.waiting, health.failed)
    lines = [
        formatting.heading("Sync Status"),
        f"Mode: {health.mode.capitalize()}",
        *([f"  Why: {health.reason}"] if health.reason else []),
        f"Last Sync: {formatting.ago(now, health.last_sync_at)}",
        f"Queue: {formatting.breakdown(queue)}",
        "",
        "Local → Remote:",
        f"  Pending: {health.pending}",
        # Only when there are some, so the manual's block keeps its shape.
        *([f"  Waiting to retry: {health.waiting}"] if health.waiting else []),
        f"  Synced today: {health.synced_today}",
        f"  Failed: {health.failed}",
        "",
        "Remote → Local:",
        f"  Last pull: {formatting.ago(now, health.last_pull_at)}",
        f"  Downloaded today: {health.downloaded_today}",
    ]
    if health.conflicts:
        lines += ["", f"Conflicts: {health.conflicts} (see 'acode sync conflicts')"]
    return "\n".join(lines)


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
        click.echo(status_text(health, now))
    if check and not health.healthy:
        for problem in health.problems:
            click.echo(f"Unhealthy: {problem}", err=True)
        raise SyncIncomplete("unhealthy")


@click.command()
@workspace_option
def pause() -> None:
    """Pause sync: nothing is uploaded or downloaded until 'resume'."""
    set_paused(session().conn, True)
    click.echo("Sync paused. Changes will queue locally.")


@click.command()
@workspace_option
def resume() -> None:
    """Resume sync and process the queue now."""
    from acode_sync.cli.sync import _report_cycle  # sync.py registers us: import late

    s = session()
    set_paused(s.conn, False)
    if not s.config.enabled:
        click.echo(f"Sync resumed, but sync.enabled is false in {s.workspace.config_path}.")
    elif not s.config.remote_url:
        click.echo("Sync resumed. No remote configured (sync.remote.url); changes queue locally.")
    else:
        click.echo("Sync resumed. Processing queue...")
        _report_cycle(s.engine().sync_once(ignore_backoff=True), quiet=False)


@click.command()
@click.option("--force", is_flag=True, help="Also retry items still waiting out a backoff.")
@workspace_option
def retry(force: bool) -> None:
    """Re-queue failed items and sync them, a ✓/✗ line each.

    Retries items rejected by the server or out of attempts, and those whose
    backoff is over; with --force, every failed item, at once. Pending items
    go in the same cycle and get their line too.
    """
    s = session()
    engine = s.engine()
    paused = is_paused(s.conn) or not s.config.enabled
    if not paused and outbox_counts(s.conn).depth:
        engine.remote_url()  # refuse before changing anything
    pending = pending_entities(s.conn)
    items = requeue_failed(s.conn, utcnow(), force=force)
    retried = {(item.entity_type, item.entity_id) for item in items}
    pending = [p for p in pending if (p.entity_type, p.entity_id) not in retried]
    waiting = 0 if force else outbox_counts(s.conn).waiting
    hint = (
        f"{formatting.plural(waiting, 'item')} still waiting out a backoff; "
        "'acode sync retry --force' retries them now."
    )
    if not items and not pending:
        click.echo("No failed items to retry.")
        if waiting:
            click.echo(hint)
        return
    if items and pending:
        click.echo(
            f"Retrying {formatting.plural(len(items), 'failed item')} and sending "
            f"{formatting.plural(len(pending), 'pending item')}..."
        )
    elif items:
        click.echo(f"Retrying {formatting.plural(len(items), 'failed item')}...")
    else:
        click.echo(f"No failed items; sending {formatting.plural(len(pending), 'pending item')}...")
    if paused:
        click.echo("Sync is paused: they are queued and go on 'acode sync resume'.")
        return
    engine.sync_once(ignore_backoff=force)
    incomplete = False
    for item in sorted([*items, *pending], key=lambda i: min(i.seqs)):
        row = outcome(s.conn, item)
        if row.status in ("Synced", "Superseded"):
            click.echo(f"  ✓ {printable(item.entity_id)}: synced")
        elif row.status == "Conflict":
            click.echo(
                f"  ! {printable(item.entity_id)}: conflict, remote won "
                "(see 'acode sync conflicts')"
            )
        elif row.status == "Failed":
            incomplete = True
            click.echo(f"  ✗ {printable(item.entity_id)}: still failing ({row.last_error})")
        else:
            incomplete = True
            click.echo(f"  … {printable(item.entity_id)}: still queued; it goes with the next sync")
    if waiting:
        click.echo(hint)
    if incomplete:
        raise SyncIncomplete()


@click.command()
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    metavar="N",
    help="Serve Prometheus metrics on 127.0.0.1:N/metrics (0: any free port).",
)
@workspace_option
def run(metrics_port: int | None) -> None:
    """The background processor: poll, batch, retry until SIGTERM/SIGINT.

    The first signal finishes the current cycle and exits 0; a second one
    stops at once.
    """
    s = session()
    runner = Runner(s.engine(), metrics_port=metrics_port)
    runner.install_signal_handlers()
    code = runner.run(announce=click.echo)
    click.echo("Stopped.")
    if code:
        raise SyncIncomplete(f"run ended with {code}")


@click.command()
@workspace_option
def metrics() -> None:
    """The health figures in Prometheus text format."""
    s = session()
    click.echo(metrics_text(figures(s.reader, utcnow(), s.config)), nl=False)


COMMANDS = (status, pause, resume, retry, run, metrics)


def register(group: click.Group) -> None:
    """Add the operating commands to ``group`` (the ``acode-sync`` group)."""
    for command in COMMANDS:
        group.add_command(command)
