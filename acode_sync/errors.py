"""The exception tree of acode-sync.

Every error a user can meet is an :class:`AcodeSyncError`; the CLI turns it into
one line and an exit code in one place (``acode_sync.cli._errors``)::

    AcodeSyncError                      exit 2 unless a subclass says otherwise
    ├── UsageError                      bad arguments, missing workspace (exit 2)
    │   └── ConfigError                 .agent/config.yml invalid (exit 2)
    └── SyncError                       sync incomplete (exit 1)
        ├── TransientError              worth retrying with backoff
        │   ├── ConnectionFailed        ACODE-SYNC-001
        │   └── WorkspaceBusy           ACODE-SYNC-002 (another process holds the lock)
        ├── BatchFailed                 ACODE-SYNC-002
        ├── ConflictDetected            ACODE-SYNC-003
        ├── MaxRetriesExceeded          ACODE-SYNC-004
        └── PermanentError              never retried
            └── InvalidPayload          ACODE-SYNC-005

Driver errors (psycopg, sqlite3) are translated at the boundary that meets them.
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


class AcodeSyncError(Exception):
    """Root of every error acode-sync raises on purpose."""

    code: str | None = None
    exit_code: int = EXIT_USAGE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        if self.code:
            return f"{self.code}: {self.message}"
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


class SyncError(AcodeSyncError):
    exit_code = EXIT_SYNC_INCOMPLETE


class TransientError(SyncError):
    """A failure of the link or the server, not of the data: retry with backoff."""

    code = BATCH_FAILED


class ConnectionFailed(TransientError):
    code = CONNECTION_FAILED


class WorkspaceBusy(TransientError):
    """Another process held the workspace lock for longer than we would wait.

    ACODE-SYNC-002 (batch failed): the batch could not be sent now, for a
    reason that passes by itself; exit 1 like any incomplete sync, since the
    command was right and only its timing was not."""

    code = BATCH_FAILED


class BatchFailed(SyncError):
    code = BATCH_FAILED


class ConflictDetected(SyncError):
    code = CONFLICT_DETECTED


class MaxRetriesExceeded(SyncError):
    code = MAX_RETRIES_EXCEEDED


class PermanentError(SyncError):
    """A failure caused by the item itself: retrying cannot help."""


class InvalidPayload(PermanentError):
    code = INVALID_PAYLOAD
