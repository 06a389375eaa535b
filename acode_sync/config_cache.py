"""The parsed ``config.yml``, kept beside it so that a command starts without PyYAML.

Importing PyYAML and building its loader costs about as much as starting
Python itself (issue 10), and every ``acode-sync`` command reads the config.
So the document PyYAML made from the file is written, with the exact text it
was made from, to ``config.parsed.json`` next to the file; the next command
reads that instead while the text is still the same. The comparison is of the
whole text, not of a time stamp: an edit within the same second, or a file put
back as it was, is never missed.

The cache is only an optimisation, and never an error: a cache that cannot be
read, written (a read-only workspace) or parsed is ignored. It holds what the
config holds (a remote URL may carry a password), so it is created readable
by its owner only. A document that JSON cannot hold as it is (a YAML date,
integer keys) is not cached.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

CACHE_NAME = "config.parsed.json"


def cache_path(config_path: Path) -> Path:
    return config_path.with_name(CACHE_NAME)


def cached_document(config_path: Path, text: str) -> tuple[bool, Any]:
    """(True, document) when the cache was made from exactly ``text``."""
    try:
        stored = json.loads(cache_path(config_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False, None
    if not isinstance(stored, dict) or stored.get("text") != text or "document" not in stored:
        return False, None
    return True, stored["document"]


def store_document(config_path: Path, text: str, document: Any) -> None:
    """Keep ``document`` for the next command, if JSON gives it back unchanged."""
    try:
        encoded = json.dumps({"text": text, "document": document}, allow_nan=False)
        if json.loads(encoded)["document"] != document:
            return
    except (TypeError, ValueError):
        return
    target = cache_path(config_path)
    temporary = target.with_name(f".{CACHE_NAME}.{os.getpid()}")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(encoded)
        os.replace(temporary, target)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
