"""acode-sync: the offline-first sync engine of an agentic coding CLI.

Local SQLite (always there) is carried to a remote PostgreSQL (durable, shared
across devices) and back: capture triggers fill the outbox, the batch mover
uploads it, the cursor-based puller brings other devices' changes home.
"""

from acode_sync.config import SyncConfig, load_config
from acode_sync.errors import AcodeSyncError
from acode_sync.workspace import Workspace, find_workspace

__version__ = "0.1.0"

__all__ = [
    "AcodeSyncError",
    "SyncConfig",
    "Workspace",
    "__version__",
    "find_workspace",
    "load_config",
]
