"""The fixture modules can be imported with no PostgreSQL anywhere: the unit tier
needs no server, and finding one (or starting a private cluster) waits for the
first test that asks for it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.fix_pg import NO_FALLBACK_ENV, URL_ENV

ROOT = Path(__file__).resolve().parents[2]
CLOSED_PORT_URL = "postgresql://postgres@127.0.0.1:1/postgres"


def test_importing_the_fixtures_looks_for_no_server() -> None:
    # Importing conftest loads every fixture module (pytest_plugins) the way
    # pytest does; with no server and no fallback allowed, any connection
    # attempt made at import would end in an error here.
    code = (
        "import importlib, tests.conftest as c\n"
        "for name in c.pytest_plugins: importlib.import_module(name)\n"
        "from tests.fix_pg import admin_url\n"
        "assert admin_url.cache_info().misses == 0\n"
    )
    env = {**os.environ, URL_ENV: CLOSED_PORT_URL, NO_FALLBACK_ENV: "1"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
