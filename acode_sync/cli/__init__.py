"""The command line: ``acode-sync`` and ``acode`` (``acode sync`` = ``acode-sync``).

The groups are assembled here, once, from the modules that hold the commands:
``setup`` (init, migrate), ``cycles`` (now, once, retry, run, pause, resume),
``reports`` (status, queue, conflicts, metrics), ``devserver``, ``server``
(compact) and ``chat``.

Each command's module is imported only when that command runs (click's lazy
group: a name here, the module on demand), so ``acode chat add``, which the
coding CLI runs for every message, loads the chat commands and the local
store, not the sync engine, the driver or the metrics library.
"""

from __future__ import annotations

import importlib
import io
import sys
from typing import Any

import click

from acode_sync import __version__
from acode_sync.cli._common import AcodeGroup, apply_logging, verbosity_options

HELP = {"help_option_names": ["-h", "--help"]}

# command name -> "module:attribute", in the order `--help` lists them
SYNC_COMMANDS = {
    "init": "acode_sync.cli.setup:init",
    "migrate": "acode_sync.cli.setup:migrate",
    "now": "acode_sync.cli.cycles:now",
    "once": "acode_sync.cli.cycles:once",
    "retry": "acode_sync.cli.cycles:retry",
    "run": "acode_sync.cli.cycles:run",
    "pause": "acode_sync.cli.cycles:pause",
    "resume": "acode_sync.cli.cycles:resume",
    "status": "acode_sync.cli.reports:status",
    "queue": "acode_sync.cli.reports:queue",
    "conflicts": "acode_sync.cli.reports:conflicts_",
    "metrics": "acode_sync.cli.reports:metrics",
    "dev-server": "acode_sync.cli.devserver:dev_server",
    "server": "acode_sync.cli.server:server",
}
ACODE_COMMANDS = {"chat": "acode_sync.cli.chat:chat"}
# The commands that log nothing at the default level: without -v/-q they do
# not load the logging package (`acode chat add` runs for every message).
LOGS_NOTHING = frozenset({"chat"})


def load(target: str) -> click.Command:
    module, _, attribute = target.partition(":")
    command = getattr(importlib.import_module(module), attribute)
    assert isinstance(command, click.Command), target
    if module == f"{__name__}.{attribute}":
        # Importing acode_sync.cli.chat bound the package's `chat` to the module;
        # `from acode_sync.cli import chat` means the command, as it always did.
        globals()[attribute] = command
    return command


class LazyGroup(AcodeGroup):
    """A group whose commands are named up front and imported when used."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.lazy, *(name for name in super().list_commands(ctx) if name not in self.lazy)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            if cmd_name not in LOGS_NOTHING:
                apply_logging(ctx, needed=True)
            if cmd_name not in self.commands:
                self.add_command(load(self.lazy[cmd_name]), cmd_name)
        return super().get_command(ctx, cmd_name)


def _entry_group(prog_name: str, lazy: dict[str, str], doc: str) -> click.Group:
    """A console script's group: lazy commands, -v/-q, --version, logging set up."""

    @click.group(prog_name, cls=LazyGroup, lazy=lazy, context_settings=HELP, help=doc)
    @verbosity_options
    @click.version_option(__version__, prog_name=prog_name)
    @click.pass_context
    def group(ctx: click.Context) -> None:
        apply_logging(ctx)

    return group


sync = _entry_group(
    "acode-sync", SYNC_COMMANDS, "acode-sync: carry local conversations to PostgreSQL and back."
)
acode = _entry_group("acode", ACODE_COMMANDS, "acode: conversations (chat) and their sync (sync).")


acode.add_command(sync, "sync")


def __getattr__(name: str) -> Any:
    # `from acode_sync.cli import chat` still works, importing it then.
    if name == "chat":
        return load(ACODE_COMMANDS["chat"])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
