"""``acode-sync ...`` (also ``acode sync ...``): the sync engine's commands."""

from __future__ import annotations

import click
from ulid import ULID

from acode_sync import conflicts, migrations
from acode_sync.cli import formatting
from acode_sync.cli._common import AcodeGroup, session, setup_logging, workspace_option
from acode_sync.cli.devserver import dev_server
from acode_sync.cli.operate import register
from acode_sync.clock import iso, utcnow
from acode_sync.config import add_device_id, default_config_text
from acode_sync.engine import CycleReport, SyncEngine, is_paused
from acode_sync.errors import SyncIncomplete, UsageError
from acode_sync.link import read as read_link
from acode_sync.outbox import counts as outbox_counts
from acode_sync.outbox import queue as outbox_queue
from acode_sync.remote import redact
from acode_sync.workspace import AGENT_DIR, check_sqlite_file


@click.group(cls=AcodeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what the engine does.")
@click.version_option(package_name="acode-sync")
def sync(verbose: bool) -> None:
    """acode-sync: carry local conversations to PostgreSQL and back."""
    setup_logging(verbose)


@sync.command()
@click.option("--remote", "remote_url", metavar="URL", help="PostgreSQL URL of the remote.")
@workspace_option
def init(remote_url: str | None) -> None:
    """Create .agent/config.yml (if absent) and .agent/workspace.db; idempotent."""
    workspace = session().new_workspace()
    check_sqlite_file(workspace.db_path)  # refuse before writing anything
    workspace.agent_dir.mkdir(exist_ok=True)
    if workspace.config_path.exists():
        config = workspace.config()  # validates an existing file before anything else
        if remote_url and remote_url != config.remote_url:
            click.echo(f"{workspace.config_path} exists: edit remote.url there to change it.")
        if config.device_id:
            click.echo(f"Config: {workspace.config_path} (kept)")
        else:
            # Without a device id nothing can sync: fill it in, touching nothing else.
            text = workspace.config_path.read_text(encoding="utf-8")
            fixed = add_device_id(text, str(ULID()), str(workspace.config_path))
            try:
                workspace.config_path.write_text(fixed, encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"{workspace.config_path}: cannot write: {exc.strerror}") from None
            config = workspace.config()
            click.echo(f"Config: {workspace.config_path} (kept; added the missing sync.device_id)")
    else:
        workspace.config_path.write_text(
            default_config_text(str(ULID()), remote_url), encoding="utf-8"
        )
        click.echo(f"Config: {workspace.config_path} (created)")
        config = workspace.config()
    conn = workspace.connect(create=True)
    try:
        ran = migrations.migrate_local(conn)
    finally:
        conn.close()
    state = "created" if ran else "up to date"
    click.echo(f"Database: {workspace.db_path} ({state})")
    click.echo(f"Device: {config.device_id}")
    click.echo(f"Workspace ready in {workspace.root / AGENT_DIR}.")


@sync.command()
@click.option("--local", "local", is_flag=True, help="Apply sql/sqlite to the workspace.")
@click.option("--remote", "remote_", is_flag=True, help="Apply sql/postgres to remote.url.")
@workspace_option
def migrate(local: bool, remote_: bool) -> None:
    """Apply the shipped migrations (also appliable by hand with sqlite3 and psql).

    With neither flag: the local side. The remote side is applied by an admin
    role (remote.url or ACODE_SYNC_REMOTE_URL must name one).
    """
    s = session()
    if local or not remote_:
        ran = migrations.migrate_local(s.conn)
        click.echo(f"Local: applied {', '.join(ran)}" if ran else "Local: up to date")
    if remote_:
        url = SyncEngine(s.workspace, s.config).remote_url()
        ran = migrations.migrate_remote(url, setting=s.config.remote_url_from)
        where = redact(url)
        click.echo(
            f"Remote {where}: applied {', '.join(ran)}" if ran else f"Remote {where}: up to date"
        )


def _report_cycle(report: CycleReport, *, quiet: bool) -> None:
    if report.disabled:
        if not quiet:
            click.echo("Sync is disabled (sync.enabled: false in .agent/config.yml).")
        return
    if report.paused:
        if not quiet:
            click.echo("Sync is paused. Changes queue locally; 'acode sync resume' to resume.")
        return
    push = report.push
    if not quiet:
        click.echo("Syncing...")
        click.echo(f"  ↑ Uploaded: {formatting.plural(push.uploaded, 'item')}")
        click.echo(f"  ↓ Downloaded: {formatting.plural(report.pull.applied, 'item')}")
        conflicts = push.conflicts + report.pull.conflicts
        if conflicts:
            click.echo(f"  ! Conflicts: {conflicts} (see 'acode sync conflicts')")
    for error in push.errors:
        click.echo(f"  ✗ {error}", err=True)
    if report.incomplete:
        click.echo(
            f"Sync incomplete: {push.failed + push.rejected} item(s) failed "
            "(see 'acode sync queue --errors').",
            err=True,
        )
        raise SyncIncomplete()
    if not quiet:
        click.echo("Sync complete.")


@sync.command()
@workspace_option
def now() -> None:
    """Sync now: push everything (backoff or not), pull, apply, and report."""
    s = session()
    _report_cycle(s.engine().sync_once(ignore_backoff=True), quiet=False)


@sync.command()
@workspace_option
def once() -> None:
    """One quiet cycle for cron and timers: honours backoff, prints only problems."""
    s = session()
    _report_cycle(s.engine().sync_once(), quiet=True)


@sync.command()
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


@sync.command(name="conflicts")
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


sync.add_command(dev_server)
register(sync)
