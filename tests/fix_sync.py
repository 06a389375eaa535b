"""Devices for the sync tests: a workspace wired to the test database as a role."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from acode_sync.cli import sync
from acode_sync.config import SyncConfig, parse_config
from acode_sync.engine import CycleReport, SyncEngine, connect_remote
from acode_sync.workspace import Workspace, write
from tests.fix_pg import PgDatabase
from tests.proxy import TcpProxy


@dataclass
class FakeClock:
    """Time that moves only when a test says so."""

    now: datetime = field(default_factory=lambda: datetime(2026, 11, 25, 12, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Device:
    """One workspace acting as a device of an owner role."""

    name: str
    workspace: Workspace
    url: str
    overrides: dict[str, Any]
    clock: Any = None
    rand: Any = None

    @property
    def config(self) -> SyncConfig:
        base = self.workspace.config()
        document: dict[str, Any] = {
            "sync": {"device_id": base.device_id, "remote": {"url": self.url}}
        }
        for dotted, value in self.overrides.items():
            node = document["sync"]
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return parse_config(document, str(self.workspace.config_path))

    def engine(self, url: str | None = None) -> SyncEngine:
        config = self.config
        if url is not None:
            config = SyncConfig(**{**config.__dict__, "remote_url": url})
        return SyncEngine(
            self.workspace,
            config,
            clock=self.clock or (lambda: datetime.now(UTC)),
            rand=self.rand or random.random,
            connect=connect_remote,
        )

    def sync(
        self,
        *,
        ignore_backoff: bool = True,
        url: str | None = None,
        max_batches: int | None = None,
    ) -> CycleReport:
        return self.engine(url).sync_once(ignore_backoff=ignore_backoff, max_batches=max_batches)

    def db(self) -> Any:
        return self.workspace.connect()


def make_device(root: Path, name: str, url: str, **overrides: Any) -> Device:
    folder = root / name
    folder.mkdir()
    result = CliRunner().invoke(sync, ["init", "--workspace", str(folder)])
    assert result.exit_code == 0, result.output
    return Device(name, Workspace(folder), url, overrides)


@pytest.fixture
def alice(tmp_path: Path, pg: PgDatabase) -> Device:
    return make_device(tmp_path, "alice-laptop", pg.device_url("alice"))


@pytest.fixture
def server(pg: PgDatabase) -> Iterator[psycopg.Connection[Any]]:
    conn = pg.admin()
    yield conn
    conn.close()


def corrupt(conn: Any, entity_id: str, field: str, value: Any) -> None:
    """Set one payload field of an entity's newest outbox row: a bad item, made
    the way a buggy writer or a damaged file would make it."""
    with write(conn):
        conn.execute(
            "UPDATE sync_outbox SET payload = json_set(payload, '$.' || ?, ?) "
            "WHERE seq = (SELECT max(seq) FROM sync_outbox WHERE entity_id = ?)",
            (field, value, entity_id),
        )


@pytest.fixture
def proxy(pg: PgDatabase) -> Iterator[TcpProxy]:
    """A real TCP proxy in front of the test server: cut, restore, lose replies."""
    params = conninfo_to_dict(pg.url())
    with TcpProxy(str(params.get("host", "127.0.0.1")), int(str(params.get("port", 5432)))) as p:
        yield p


def through(proxy: TcpProxy, url: str) -> str:
    """``url`` with the proxy as its host and port."""
    params = conninfo_to_dict(url)
    params.update(host="127.0.0.1", port=proxy.port)
    return make_conninfo("", **params)
