"""``acode-sync init`` and ``migrate``: a workspace and the schemas on both sides."""

from __future__ import annotations

import click

from acode_sync import migrations
from acode_sync.cli._common import session, workspace_option
from acode_sync.config import add_device_id, default_config_text
from acode_sync.errors import UsageError
from acode_sync.store import new_id
from acode_sync.workspace import AGENT_DIR, check_sqlite_file


@click.command()
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
            fixed = add_device_id(text, new_id(), str(workspace.config_path))
            try:
                workspace.config_path.write_text(fixed, encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"{workspace.config_path}: cannot write: {exc.strerror}") from None
            config = workspace.config()
            click.echo(f"Config: {workspace.config_path} (kept; added the missing sync.device_id)")
    else:
        workspace.config_path.write_text(
            default_config_text(new_id(), remote_url), encoding="utf-8"
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


@click.command()
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
        from acode_sync.engine import SyncEngine
        from acode_sync.remote import redact

        url = SyncEngine(s.workspace, s.config).remote_url()
        ran = migrations.migrate_remote(url, setting=s.config.remote_url_from)
        where = redact(url)
        click.echo(
            f"Remote {where}: applied {', '.join(ran)}" if ran else f"Remote {where}: up to date"
        )
