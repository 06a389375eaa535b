"""The command line: ``acode-sync`` and ``acode`` (``acode sync`` = ``acode-sync``)."""

from __future__ import annotations

import io
import sys

import click

from acode_sync.cli._common import AcodeGroup, setup_logging
from acode_sync.cli.chat import chat
from acode_sync.cli.sync import sync


@click.group(cls=AcodeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what the engine does.")
def acode(verbose: bool) -> None:
    """acode: conversations (chat) and their sync (sync)."""
    setup_logging(verbose)


acode.add_command(sync)
acode.add_command(chat)


def _tolerant_streams() -> None:
    # The last guard for text any SQLite client stored: a value we did not pass
    # through text.printable is shown escaped instead of ending in a traceback.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def sync_main() -> None:
    _tolerant_streams()
    sync(prog_name="acode-sync")


def acode_main() -> None:
    _tolerant_streams()
    acode(prog_name="acode")


__all__ = ["acode", "acode_main", "chat", "sync", "sync_main"]
