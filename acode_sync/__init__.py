"""acode-sync: the offline-first sync engine of an agentic coding CLI.

Local SQLite (always there) is carried to a remote PostgreSQL (durable, shared
across devices) and back: capture triggers fill the outbox, the batch mover
uploads it, the cursor-based puller brings other devices' changes home.

The embeddable engine (docs/API.md)::

    from acode_sync import SyncEngine, find_workspace

    with SyncEngine(find_workspace(".")) as engine:  # start(): a thread of its own
        ...  # the host writes; the engine follows
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from acode_sync.config import SyncConfig, load_config
    from acode_sync.engine import SyncEngine
    from acode_sync.errors import AcodeSyncError, SyncTimeout
    from acode_sync.events import ConflictResolved, EntityStatusChanged, Event, HealthChanged
    from acode_sync.health import Health
    from acode_sync.report import CycleReport
    from acode_sync.workspace import Workspace, find_workspace

__version__ = "0.1.0"

# Each public name is imported on first use: `acode chat add` imports this
# package too, and must not pay for the driver the engine loads (issue 10).
_PUBLIC = {
    "AcodeSyncError": "acode_sync.errors",
    "ConflictResolved": "acode_sync.events",
    "CycleReport": "acode_sync.report",
    "EntityStatusChanged": "acode_sync.events",
    "Event": "acode_sync.events",
    "Health": "acode_sync.health",
    "HealthChanged": "acode_sync.events",
    "SyncConfig": "acode_sync.config",
    "SyncEngine": "acode_sync.engine",
    "SyncTimeout": "acode_sync.errors",
    "Workspace": "acode_sync.workspace",
    "find_workspace": "acode_sync.workspace",
    "load_config": "acode_sync.config",
}


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
