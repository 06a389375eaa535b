"""``python -m acode_sync`` is ``acode-sync``."""

from acode_sync.cli import sync_main

sync_main()
