"""The commands that move data: ``now``, ``once``, ``retry``, ``run``, and
``pause``/``resume``.

They are thin: the cycle is ``SyncEngine.sync_once`` (run with the progress
bar and Ctrl-C handling of ``cli.progress``), the loop and the re-queue
``acode_sync.runner``; the report's text is ``formatting``'s, and errors
become messages and exit codes in ``AcodeGroup``, in one place.

The engine and the runner (psycopg, prometheus_client) are imported inside
the commands: ``acode chat add`` loads this module too, and must start fast.
"""

from __future__ import annotations

import click

from acode_sync.cli import formatting
from acode_sync.cli._common import Session, is_quiet, report_cycle, session, workspace_option
from acode_sync.clock import utcnow
from acode_sync.errors import SyncIncomplete
from acode_sync.outbox import counts as outbox_counts
from acode_sync.text import printable


def _sync_with_report(s: Session) -> None:
    """``Syncing...``, the cycle (with its bar), then the summary (``now``, ``resume``)."""
    from acode_sync.cli.progress import run_cycle

    quiet = is_quiet()
    report, started = run_cycle(
        s.engine(),
        s.conn,
        ignore_backoff=True,
        quiet=quiet,
        # First, before the bar: once the cycle holds the lock and reached the server.
        on_start=None if quiet else lambda: click.echo("Syncing..."),
    )
    report_cycle(report, quiet=quiet, announced=started)


@click.command()
@workspace_option
def now() -> None:
    """Sync now: push everything queued (backoff or not), pull, apply, report.

    In a terminal a progress bar shows on standard error; Ctrl-C stops after
    the batch in flight and says what was done and what remains (exit 1).
    """
    _sync_with_report(session())


@click.command()
@workspace_option
def once() -> None:
    """One quiet cycle for cron and timers: honours backoff, prints only problems."""
    report_cycle(session().engine().sync_once(), quiet=True)


@click.command()
@workspace_option
def pause() -> None:
    """Pause sync: nothing is uploaded or downloaded until 'resume'."""
    from acode_sync.runner import set_paused

    set_paused(session().conn, True)
    click.echo("Sync paused. Changes will queue locally.")


@click.command()
@workspace_option
def resume() -> None:
    """Resume sync and process the queue now."""
    from acode_sync.runner import set_paused

    s = session()
    set_paused(s.conn, False)
    if not s.config.enabled:
        click.echo(f"Sync resumed, but sync.enabled is false in {s.workspace.config_path}.")
    elif not s.config.remote_url:
        click.echo("Sync resumed. No remote configured (sync.remote.url); changes queue locally.")
    else:
        click.echo("Sync resumed. Processing queue...")
        _sync_with_report(s)


@click.command()
@click.option("--force", is_flag=True, help="Also retry items still waiting out a backoff.")
@workspace_option
def retry(force: bool) -> None:
    """Re-queue failed items and sync them, a ✓/✗ line each.

    Retries items rejected by the server or out of attempts, and those whose
    backoff is over; with --force, every failed item, at once. Pending items
    go in the same cycle and get their line too.
    """
    from acode_sync.cli.progress import run_cycle
    from acode_sync.engine import is_paused
    from acode_sync.runner import outcome, pending_entities, requeue_failed

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
    run_cycle(engine, s.conn, ignore_backoff=force, quiet=is_quiet())
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
    from acode_sync.runner import Runner

    s = session()
    runner = Runner(s.engine(), metrics_port=metrics_port)
    runner.install_signal_handlers()
    code = runner.run(announce=click.echo)
    click.echo("Stopped.")
    if code:
        raise SyncIncomplete(f"run ended with {code}")
