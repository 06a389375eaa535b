"""How far a cycle has come, for a caller that shows it (the CLI's progress bar).

The upload and download loops take an optional :class:`Progress`: each tells
it its total once (the upload: the queue's pending and waiting rows; the
download: the server's head seq minus the cursor, an upper bound once the log
was compacted) and then, after every batch or page it has committed, how many
rows that settled. A caller may raise from :meth:`Progress.advance` to stop
between batches: what was committed stays, nothing is half done.
"""

from __future__ import annotations

from typing import Protocol

UPLOAD = "upload"
DOWNLOAD = "download"


class Progress(Protocol):
    def total(self, phase: str, count: int) -> None:
        """``phase`` (:data:`UPLOAD` or :data:`DOWNLOAD`) has about ``count`` rows to do."""

    def advance(self, phase: str, count: int) -> None:
        """``count`` more rows of ``phase`` are done (committed locally)."""
