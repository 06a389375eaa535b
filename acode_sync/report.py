"""A cycle's report (``SyncEngine.sync_once`` and ``sync_now`` return it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from acode_sync.download import PullReport
from acode_sync.upload import PushReport


@dataclass
class CycleReport:
    paused: bool = False
    disabled: bool = False
    push: PushReport = field(default_factory=PushReport)
    pull: PullReport = field(default_factory=PullReport)
    pull_failed: bool = False

    @property
    def incomplete(self) -> bool:
        return bool(self.push.failed or self.push.rejected or self.pull_failed)
