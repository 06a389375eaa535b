"""PostgreSQL for the tests: pytest-postgresql's no-process fixture + templates.

The server is ``$ACODE_TEST_PG_URL``, else the one on 127.0.0.1:5432; when
neither answers, a private cluster is started as the ``postgres`` user (the
same one ``acode-sync dev-server`` runs). A template database gets the remote
migrations once per session; every test gets its own database cloned from it.

Device roles are cluster-wide: ``acode_test_alice`` and ``acode_test_bob``
are created once (idempotently) and granted the ``acode_sync_device`` group.
On a trust-auth server they log in without a password.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pytest_postgresql import factories

from acode_sync.migrations import migrate_remote

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PRIVATE_DIR = Path(tempfile.gettempdir()) / "acode-sync-test-pg"
DEVICE_ROLES = ("acode_test_alice", "acode_test_bob")


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def _admin_url() -> str:
    url = os.environ.get("ACODE_TEST_PG_URL") or DEFAULT_URL
    if _reachable(url):
        return url
    from acode_sync import devserver

    return devserver.start(PRIVATE_DIR)


ADMIN_URL = _admin_url()
_ADMIN = conninfo_to_dict(ADMIN_URL)


def load_remote_schema(**params: Any) -> None:
    """pytest-postgresql loader: the template gets every shipped server migration."""
    keys = ("host", "port", "user", "password", "dbname")
    migrate_remote(make_conninfo(**{k: params[k] for k in keys if params.get(k) is not None}))


acode_pg_noproc = factories.postgresql_noproc(
    host=str(_ADMIN.get("host", "127.0.0.1")),
    port=_ADMIN.get("port", 5432),
    user=str(_ADMIN.get("user", "postgres")),
    password=_ADMIN.get("password"),  # type: ignore[arg-type]
    # One name per test process: parallel runs on a shared server never collide.
    dbname=f"acode_sync_test_{os.getpid()}",
    load=[load_remote_schema],
)
acode_pg_conn = factories.postgresql("acode_pg_noproc")


@dataclass(frozen=True)
class PgDatabase:
    """One test's database: an admin connection string and device logins."""

    admin_url: str
    dbname: str

    def url(self, role: str | None = None) -> str:
        params = conninfo_to_dict(self.admin_url)
        params["dbname"] = self.dbname
        if role is not None:
            params["user"] = role
            params.pop("password", None)
        return make_conninfo(**params)

    def device_url(self, who: str = "alice") -> str:
        return self.url(f"acode_test_{who}")

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url(), autocommit=True)


@pytest.fixture(scope="session")
def device_roles(acode_pg_noproc: Any) -> tuple[str, ...]:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        for role in DEVICE_ROLES:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            has_group = conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = 'acode_sync_device'"
            ).fetchone()
            if has_group:
                conn.execute(sql.SQL("GRANT acode_sync_device TO {}").format(sql.Identifier(role)))
    return DEVICE_ROLES


@pytest.fixture
def pg(
    acode_pg_conn: psycopg.Connection[Any], device_roles: tuple[str, ...]
) -> Iterator[PgDatabase]:
    """A fresh database with the server schema, cloned from the session template."""
    dbname = acode_pg_conn.info.dbname
    acode_pg_conn.commit()
    yield PgDatabase(ADMIN_URL, dbname)
