"""acode-sync: the offline-first sync engine of an agentic coding CLI.

Local SQLite (always there) is carried to a remote PostgreSQL (durable, shared
across devices) and back: capture triggers fill the outbox, the batch mover
uploads it, the cursor-based puller brings other devices' changes home.

The embeddable engine (docs/API.md)::

    from acode_sync import SyncEngine, find_workspace

    with SyncEngine(find_workspace(".")) as engine:  # start(): a thread of its own
        ...  # the host writes; the engine follows
"""

from acode_sync.config import SyncConfig, load_config
from acode_sync.engine import SyncEngine
from acode_sync.errors import AcodeSyncError, SyncTimeout
from acode_sync.events import ConflictResolved, EntityStatusChanged, Event, HealthChanged
from acode_sync.health import Health
from acode_sync.report import CycleReport
from acode_sync.workspace import Workspace, find_workspace

__version__ = "0.1.0"

__all__ = [
    "AcodeSyncError",
    "ConflictResolved",
    "CycleReport",
    "EntityStatusChanged",
    "Event",
    "Health",
    "HealthChanged",
    "SyncConfig",
    "SyncEngine",
    "SyncTimeout",
    "Workspace",
    "__version__",
    "find_workspace",
    "load_config",
]
