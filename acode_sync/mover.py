"""What the upload path and the download path of one device share in a cycle."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from acode_sync.clock import Clock, utcnow
from acode_sync.config import SyncConfig


@dataclass(eq=False)
class Mover:
    """One device's local store, settings and identity, for one direction of sync.

    ``clock`` is passed in so tests drive backoff and conflict times without
    sleeping; ``conflicts_dir`` is where a losing side is preserved as a file.
    """

    conn: sqlite3.Connection
    config: SyncConfig
    device_id: str
    clock: Clock = field(default=utcnow, kw_only=True)
    conflicts_dir: Path | None = field(default=None, kw_only=True)
