"""``acode-sync server ...``: an admin's commands on the remote (compact)."""

from __future__ import annotations

import os

import click

from acode_sync.cli._common import (
    AcodeGroup,
    count_option,
    session,
    verbosity_options,
    workspace_option,
)
from acode_sync.compaction import DEFAULT_KEEP_KEYS_DAYS, compact_log
from acode_sync.config import REMOTE_URL_ENV
from acode_sync.engine import SyncEngine
from acode_sync.remote import redact


@click.group(cls=AcodeGroup)
@verbosity_options
def server() -> None:
    """Admin commands on the remote server (run with an admin role's URL)."""


@server.command()
@count_option(
    "--keep-keys-days",
    "keep_keys_days",
    DEFAULT_KEEP_KEYS_DAYS,
    "Keep the idempotency keys of removed rows this many days, so that a "
    "device resending an older batch still gets 'duplicate'.",
)
@workspace_option
def compact(keep_keys_days: int) -> None:
    """Remove change-log rows superseded by a later change of the same entity.

    Withdrawals stay, and a resend of a batch from within the window is still
    answered as a duplicate. The log's tables are analyzed afterwards. The
    URL is ACODE_SYNC_REMOTE_URL (no workspace needed, e.g. from cron), else
    the workspace's remote.url; an admin role.
    """
    url = os.environ.get(REMOTE_URL_ENV)
    setting = REMOTE_URL_ENV
    if not url:
        s = session()
        url = SyncEngine(s.workspace, s.config).remote_url()
        setting = s.config.remote_url_from
    done = compact_log(url, keep_keys_days=keep_keys_days, setting=setting)
    removed = sum(o.removed for o in done)
    left = sum(o.kept_rows for o in done)
    for o in done:
        if o.removed or o.keys_dropped:
            click.echo(
                f"  {o.owner}: removed {o.removed} rows, {o.kept_rows} left; "
                f"kept {o.keys_kept} keys, dropped {o.keys_dropped} expired keys"
            )
    click.echo(
        f"Remote {redact(url)}: compacted {len(done)} owners: removed {removed} change-log "
        f"rows, {left} left (keys kept {keep_keys_days} days)"
    )
