"""PostgreSQL for the tests: pytest-postgresql's no-process fixture + templates.

The server is ``$ACODE_TEST_PG_URL``, else the one on 127.0.0.1:5432; when
neither answers, a private cluster is started as the ``postgres`` user (the
same one ``acode-sync dev-server`` runs), unless ``$ACODE_TEST_PG_NO_FALLBACK``
is set: then the first test that needs a server fails and says why. A template
database gets the remote migrations once per session; every test gets its own
database cloned from it.

Nothing here connects when the module is imported: the server is found the
first time a test asks for it (:func:`admin_url`), so a run of tests that need
no server (the unit tier) never looks for one. pytest-postgresql's no-process
factory reads host and port when it is *built*, at import; so it is built with
``depends_on`` and takes them, at fixture time, from :func:`acode_pg_server`.

Device roles are cluster-wide: ``acode_test_alice`` and ``acode_test_bob``
are created once (idempotently) and granted the ``acode_sync_device`` group.
On a trust-auth server they log in without a password.
"""

from __future__ import annotations

import functools
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

URL_ENV = "ACODE_TEST_PG_URL"
NO_FALLBACK_ENV = "ACODE_TEST_PG_NO_FALLBACK"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PRIVATE_DIR = Path(tempfile.gettempdir()) / "acode-sync-test-pg"
DEVICE_ROLES = ("acode_test_alice", "acode_test_bob")


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@functools.cache
def admin_url() -> str:
    """The admin (superuser) URL of the test server, found on first use."""
    url = os.environ.get(URL_ENV) or DEFAULT_URL
    if _reachable(url):
        return url
    if os.environ.get(NO_FALLBACK_ENV):
        raise RuntimeError(
            f"no PostgreSQL answers at {url} and ${NO_FALLBACK_ENV} forbids starting "
            "a private cluster"
        )
    from acode_sync import devserver

    return devserver.start(PRIVATE_DIR)


@dataclass(frozen=True)
class PgServer:
    """The server as pytest-postgresql's ``depends_on`` reads it: where to
    connect, and ``template_dbname`` None, so the template it builds is a
    fresh database, not a clone of another."""

    host: str
    port: int
    user: str
    password: str | None
    options: str = ""
    maintenance_dbname: str = "postgres"
    template_dbname: str | None = None


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    return admin_url()


@pytest.fixture(scope="session")
def acode_pg_server(pg_admin_url: str) -> PgServer:
    params = conninfo_to_dict(pg_admin_url)
    password = params.get("password")
    return PgServer(
        host=str(params.get("host", "127.0.0.1")),
        port=int(str(params.get("port", 5432))),
        user=str(params.get("user", "postgres")),
        password=None if password is None else str(password),
        maintenance_dbname=str(params.get("dbname", "postgres")),
    )


def load_remote_schema(**params: Any) -> None:
    """pytest-postgresql loader: the template gets every shipped server migration."""
    keys = ("host", "port", "user", "password", "dbname")
    migrate_remote(make_conninfo("", **{k: params[k] for k in keys if params.get(k) is not None}))


acode_pg_noproc = factories.postgresql_noproc(
    # One name per test process: parallel runs on a shared server never collide.
    dbname=f"acode_sync_test_{os.getpid()}",
    load=[load_remote_schema],
    depends_on="acode_pg_server",
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
        return make_conninfo("", **params)

    def device_url(self, who: str = "alice") -> str:
        return self.url(f"acode_test_{who}")

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url(), autocommit=True)


@pytest.fixture(scope="session")
def device_roles(acode_pg_noproc: Any, pg_admin_url: str) -> tuple[str, ...]:
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
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
    acode_pg_conn: psycopg.Connection[Any], device_roles: tuple[str, ...], pg_admin_url: str
) -> Iterator[PgDatabase]:
    """A fresh database with the server schema, cloned from the session template."""
    dbname = acode_pg_conn.info.dbname
    acode_pg_conn.commit()
    yield PgDatabase(pg_admin_url, dbname)
