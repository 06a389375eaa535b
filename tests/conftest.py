from __future__ import annotations

pytest_plugins = ["tests.fix_pg", "tests.fix_local", "tests.fix_sync"]
