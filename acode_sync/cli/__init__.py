"""The command line: ``acode-sync`` and ``acode`` (``acode sync`` = ``acode-sync``).

The groups are assembled here, once, from the modules that hold the commands:
``setup`` (init, migrate), ``cycles`` (now, once, retry, run, pause, resume),
``reports`` (status, queue, conflicts, metrics), ``devserver``, ``server``
(compact) and ``chat``.
"""

from __future__ import annotations

import io
import sys

import click

from acode_sync.cli import cycles, reports, setup
from acode_sync.cli._common import AcodeGroup, setup_logging
from acode_sync.cli.chat import chat
from acode_sync.cli.devserver import dev_server
from acode_sync.cli.server import server

HELP = {"help_option_names": ["-h", "--help"]}


@click.group(cls=AcodeGroup, context_settings=HELP)
@click.option("-v", "--verbose", is_flag=True, help="Log what the engine does.")
@click.version_option(package_name="acode-sync")
def sync(verbose: bool) -> None:
    """acode-sync: carry local conversations to PostgreSQL and back."""
    setup_logging(verbose)


for command in (
    setup.init,
    setup.migrate,
    cycles.now,
    cycles.once,
    cycles.retry,
    cycles.run,
    cycles.pause,
    cycles.resume,
    reports.status,
    reports.queue,
    reports.conflicts_,
    reports.metrics,
    dev_server,
    server,
):
    sync.add_command(command)


@click.group(cls=AcodeGroup, context_settings=HELP)
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
