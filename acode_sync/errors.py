"""The exception tree of acode-sync.

Every error a user can meet is an :class:`AcodeSyncError`; the CLI turns it into
one line and an exit code in one place (``AcodeGroup`` in
``acode_sync.cli._common``)::

    AcodeSyncError                      exit 2 unless a subclass says otherwise
    ├── UsageError                      bad arguments, missing workspace (exit 2)
    │   ├── ConfigError                 .agent/config.yml invalid (exit 2)
    │   └── SetupError                  the remote answers but refuses us: password,
    │       │                           database, role, grants, schema, URL (exit 2;
    │       │                           ACODE-SYNC-001 at login, -002 at push/pull)
    │       └── NeedsAdmin              migrate --remote run as a role without the rights
    ├── MigrationChanged                a recorded migration's shipped file changed (exit 2)
    ├── NotRunning                      dev-server url: no server there (exit 1)
    └── SyncError                       sync incomplete (exit 1)
        ├── SyncIncomplete              the command already said what failed
        ├── TransientError              worth retrying with backoff
        │   ├── ConnectionFailed        ACODE-SYNC-001
        │   ├── WorkspaceBusy           ACODE-SYNC-002 (another process holds the
        │   │                           workspace lock, or the database's write lock)
        │   └── SyncTimeout             ACODE-SYNC-002 (SyncEngine.sync_now: no result
        │                               within its timeout, or the engine is stopped)
        └── PermanentError              never retried
            └── InvalidPayload          ACODE-SYNC-005

The codes -002 (batch failed), -003 (conflict detected), -004 (max retries
exceeded) and -005 describe items too: the upload path writes them into an
outbox row's ``last_error`` and the conflict log, where ``queue --errors`` and
``status`` show them; an item's failure is not an exception of the command.

Driver errors (psycopg, sqlite3) are translated at the boundary that meets them
(``remote`` for PostgreSQL, ``workspace.write`` for a locked SQLite file); the
CLI's catch-all for ``sqlite3.Error`` is the last resort. The one exit that is
no error of this tree: a second stop signal ends ``run`` at once with
``SystemExit(1)``, which no handler of a cycle may catch.

A :class:`SetupError` is not being offline: waiting does not fix it, a person
does. ``run`` keeps going but retries it only at the backoff cap, and ``status``
shows mode ``error``; the kinds recorded for ``status`` are :data:`LINK` and
:data:`SETUP`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_SYNC_INCOMPLETE = 1
EXIT_USAGE = 2

CONNECTION_FAILED = "ACODE-SYNC-001"
BATCH_FAILED = "ACODE-SYNC-002"
CONFLICT_DETECTED = "ACODE-SYNC-003"
MAX_RETRIES_EXCEEDED = "ACODE-SYNC-004"
INVALID_PAYLOAD = "ACODE-SYNC-005"

# The kind of the last failure, as ``sync_state`` records it for ``status``.
LINK = "link"
SETUP = "setup"


class AcodeSyncError(Exception):
    """Root of every error acode-sync raises on purpose."""

    code: str | None = None
    exit_code: int = EXIT_USAGE
    # True when the command has already shown the user what went wrong.
    shown: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        if self.code:
            return f"{self.code}: {self.text()}"
        return self.text()

    def text(self) -> str:
        """The message without its code."""
        return self.message


class UsageError(AcodeSyncError):
    """The command cannot run as asked: bad argument, no workspace, not a database."""


class ConfigError(UsageError):
    """The configuration file is invalid; names the file, the key and the reason."""

    def __init__(self, path: str, key: str, reason: str) -> None:
        super().__init__(f"{path}: {key}: {reason}")
        self.path = path
        self.key = key
        self.reason = reason


class SetupError(UsageError):
    """The remote answers but refuses us, or its URL cannot be used: a setting
    (or the server's set-up) must change; retrying as it is cannot help.

    ``setting`` names where the URL came from (the config key and file, or the
    environment variable); the engine fills it in, as the remote module that
    meets the refusal does not know it.
    """

    code: str | None = CONNECTION_FAILED

    def __init__(
        self, problem: str, fix: str, *, code: str | None = None, setting: str | None = None
    ) -> None:
        super().__init__(problem)
        if code is not None:
            self.code = code
        self.problem = problem
        self.fix = fix
        self.setting = setting

    def text(self) -> str:
        # Built when shown: the setting is known only after the error was raised.
        where = f" (URL from {self.setting})" if self.setting else ""
        return f"{self.problem}{where}; {self.fix}"


class NeedsAdmin(SetupError):
    """``migrate --remote`` met a role that may not create the server schema."""

    code = None


class MigrationChanged(AcodeSyncError):
    """A migration recorded as applied (with its checksum) ships as a different
    file now. Released migrations are never edited, so this installation and the
    database disagree about what the schema is: nothing is applied."""

    def __init__(self, side: str, name: str, recorded: str, shipped: str) -> None:
        super().__init__(
            f"{side} migration {name} was applied from a file with sha256 {recorded[:12]}, "
            f"but this acode-sync ships it with sha256 {shipped[:12]}; released migrations "
            "are never edited: use the acode-sync release that applied it"
        )
        self.side = side
        self.name = name


class NotRunning(AcodeSyncError):
    """``dev-server url`` found no server running: a state, not a usage error."""

    exit_code = EXIT_SYNC_INCOMPLETE


class SyncError(AcodeSyncError):
    exit_code = EXIT_SYNC_INCOMPLETE


class SyncIncomplete(SyncError):
    """Sync did not finish; the command has already shown which items failed and
    why, so the error boundary only sets the exit code."""

    shown = True

    def __init__(self, message: str = "sync incomplete") -> None:
        super().__init__(message)


class TransientError(SyncError):
    """A failure of the link or the server, not of the data: retry with backoff."""

    code = BATCH_FAILED


class ConnectionFailed(TransientError):
    code = CONNECTION_FAILED


class WorkspaceBusy(TransientError):
    """Another process held the workspace lock (or SQLite's write lock) for
    longer than we would wait.

    ACODE-SYNC-002 (batch failed): the batch could not be sent now, for a
    reason that passes by itself; exit 1 like any incomplete sync, since the
    command was right and only its timing was not."""

    code = BATCH_FAILED


class SyncTimeout(TransientError):
    """``SyncEngine.sync_now`` had no result within its timeout (the cycle goes
    on on the engine's thread), or the engine was stopped."""

    code = BATCH_FAILED


class PermanentError(SyncError):
    """A failure caused by the item itself: retrying cannot help."""


class InvalidPayload(PermanentError):
    code = INVALID_PAYLOAD
