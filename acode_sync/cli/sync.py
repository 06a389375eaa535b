"""``acode-sync ...`` (also ``acode sync ...``): the sync engine's commands."""

from __future__ import annotations

import click
from ulid import ULID

from acode_sync import migrations
from acode_sync.cli import formatting
from acode_sync.cli._common import AcodeGroup, session, setup_logging, workspace_option
from acode_sync.config import default_config_text
from acode_sync.outbox import queue as outbox_queue
from acode_sync.workspace import AGENT_DIR


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
    workspace.agent_dir.mkdir(exist_ok=True)
    if workspace.config_path.exists():
        config = workspace.config()  # validates an existing file before anything else
        if remote_url and remote_url != config.remote_url:
            click.echo(f"{workspace.config_path} exists: edit remote.url there to change it.")
        click.echo(f"Config: {workspace.config_path} (kept)")
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
@workspace_option
def migrate(local: bool) -> None:
    """Apply the shipped migrations (also appliable by hand with sqlite3)."""
    s = session()
    if not local:
        local = True
    if local:
        ran = migrations.migrate_local(s.conn)
        click.echo(f"Local: applied {', '.join(ran)}" if ran else "Local: up to date")


@sync.command()
@click.option("--errors", "errors_only", is_flag=True, help="Only items with an error.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@workspace_option
def queue(errors_only: bool, as_json: bool) -> None:
    """The pending and failed upload items."""
    rows = outbox_queue(session().conn, errors_only=errors_only)
    if as_json:
        click.echo(formatting.queue_json(rows))
    else:
        click.echo(formatting.queue_text(rows, errors_only=errors_only))
