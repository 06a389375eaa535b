"""``acode-sync dev-server start|stop|url``: a private PostgreSQL for trying it out and tests."""

from __future__ import annotations

from pathlib import Path

import click

from acode_sync import devserver
from acode_sync.cli._common import AcodeGroup, verbosity_options, workspace_option
from acode_sync.errors import NotRunning

dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=devserver.DIR_ENV,
    default=None,
    help=(
        f"Cluster directory (env {devserver.DIR_ENV}; default ~/.cache/acode-sync/dev-server,"
        " as root /tmp/acode-sync-dev-server-0)."
    ),
)


def _directory(directory: Path | None) -> Path:
    return (directory or devserver.default_dir()).expanduser().absolute()


@click.group("dev-server", cls=AcodeGroup)
@verbosity_options
def dev_server() -> None:
    """A private PostgreSQL on 127.0.0.1 for trying acode-sync out and for tests."""


@dev_server.command()
@dir_option
@click.option("--port", type=click.IntRange(1, 65535), help="TCP port (default: a free one).")
@workspace_option
def start(directory: Path | None, port: int | None) -> None:
    """Start the server (creating its cluster on first use); prints its URL. Idempotent."""
    url = devserver.start(_directory(directory), port=port)
    click.echo(url)
    click.echo("Use it with:", err=True)
    click.echo(f"  acode-sync init --remote {url}", err=True)
    click.echo(f"  export ACODE_SYNC_REMOTE_URL={url}", err=True)


@dev_server.command()
@dir_option
@workspace_option
def stop(directory: Path | None) -> None:
    """Stop the server (fast shutdown); the cluster's data is kept."""
    where = _directory(directory)
    if devserver.stop(where):
        click.echo(f"Stopped the dev server in {where}.")
    else:
        click.echo(f"No dev server running in {where}.")


@dev_server.command()
@dir_option
@workspace_option
def url(directory: Path | None) -> None:
    """Print the running server's URL; exit 1 when it is not running."""
    where = _directory(directory)
    found = devserver.url(where)
    if found is None:
        raise NotRunning(f"no dev server running in {where}")
    click.echo(found)
