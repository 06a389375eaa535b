"""``acode chat ...``: make and edit conversation data by hand."""

from __future__ import annotations

import sys

import click

from acode_sync import store
from acode_sync.cli._common import AcodeGroup, session, verbosity_options, workspace_option
from acode_sync.privacy import LEVELS
from acode_sync.text import printable

PRIVACY = click.Choice(LEVELS, case_sensitive=False)


@click.group(cls=AcodeGroup)
@verbosity_options
def chat() -> None:
    """Create, list and edit chats and their messages."""


@chat.command()
@click.argument("title")
@click.option("--privacy", type=PRIVACY, default="FULL", show_default=True)
@workspace_option
def new(title: str, privacy: str) -> None:
    """Start a chat; prints its id."""
    click.echo(store.new_chat(session().conn, title, privacy))


@chat.command()
@click.argument("chat_id")
@click.argument("content")
@click.option("--role", type=click.Choice(store.ROLES), default="user", show_default=True)
@click.option("--privacy", type=PRIVACY, default="FULL", show_default=True)
@workspace_option
def add(chat_id: str, content: str, role: str, privacy: str) -> None:
    """Add a message (CONTENT '-' reads standard input); prints its id."""
    if content == "-":
        # Bytes, not sys.stdin's strict decoding: a bad byte is refused with a
        # message (store), not a traceback.
        content = sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
    click.echo(store.add_message(session().conn, chat_id, content, role, privacy))


@chat.command(name="list")
@click.option("--all", "include_deleted", is_flag=True, help="Include deleted chats.")
@workspace_option
def list_(include_deleted: bool) -> None:
    """The chats of this workspace."""
    from acode_sync.cli import formatting  # tabulate: only for the tables

    chats = store.list_chats(session().reader, include_deleted)
    if not chats:
        click.echo("No chats.")
        return
    click.echo(
        formatting.table(
            ["Id", "Title", "Messages", "Privacy", "Sync", "Updated"],
            [
                [
                    c.id,
                    c.title + (" (deleted)" if c.deleted_at else ""),
                    str(c.message_count),
                    c.privacy,
                    "local only" if c.privacy == "LOCAL_ONLY" else c.sync_status,
                    c.updated_at,
                ]
                for c in chats
            ],
        )
    )


@chat.command()
@click.argument("chat_id")
@workspace_option
def show(chat_id: str) -> None:
    """A chat and its messages."""
    from acode_sync.cli import formatting

    found, messages = store.get_chat(session().reader, chat_id)
    click.echo(formatting.heading(f'Chat: {printable(found.id)} "{printable(found.title)}"'))
    click.echo(
        f"Privacy: {found.privacy}  Sync: {found.sync_status}  Version: {found.version}"
        + (f"  Deleted: {found.deleted_at}" if found.deleted_at else "")
    )
    for message in messages:
        # Only what is not yet on the server is marked; Failed points at the reason.
        mark = "" if message.sync_status == "Synced" else f" [{message.sync_status}]"
        click.echo(
            f"\n[{message.created_at}] {printable(message.role)} ({printable(message.id)}){mark}:"
        )
        click.echo(printable(message.content))
    if any(message.sync_status == "Failed" for message in messages):
        click.echo("\nWhy a message failed: 'acode sync queue --errors'.")


@chat.command()
@click.argument("chat_id")
@click.argument("title")
@workspace_option
def rename(chat_id: str, title: str) -> None:
    """Give a chat a new title."""
    store.rename_chat(session().conn, chat_id, title)
    click.echo(f"Renamed {chat_id}.")


@chat.command()
@click.argument("entity_id")
@workspace_option
def delete(entity_id: str) -> None:
    """Delete a chat or a message (soft: the delete syncs like any change)."""
    kind = store.delete(session().conn, entity_id)
    click.echo(f"Deleted {kind} {entity_id}.")


@chat.command()
@click.argument("entity_id")
@click.argument("level", type=PRIVACY)
@workspace_option
def privacy(entity_id: str, level: str) -> None:
    """Set a chat's or a message's privacy: FULL, REDACTED or LOCAL_ONLY."""
    kind = store.set_privacy(session().conn, entity_id, level)
    click.echo(f"Privacy of {kind} {entity_id}: {level.upper()}.")
