"""The private PostgreSQL of ``acode-sync dev-server``: start, connect, url, stop.

A cluster starts in about 1-2 s here (initdb included), so these run in the
default suite. As root the server runs as the ``postgres`` OS user, which cannot
enter pytest's ``tmp_path`` (/tmp/pytest-of-root is 0700): each test gets a
fresh directory directly under the system temp directory instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.conninfo import make_conninfo

from acode_sync import devserver
from acode_sync.cli.devserver import dev_server
from acode_sync.errors import UsageError


@pytest.fixture
def cluster_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="acode-devsrv-"))
    try:
        yield directory
    finally:
        devserver.stop(directory)
        shutil.rmtree(directory, ignore_errors=True)


def select_one(url: str, password: str | None = None) -> int:
    conninfo = make_conninfo(url, password=password) if password is not None else url
    with psycopg.connect(conninfo, connect_timeout=5) as conn:
        row = conn.execute("SELECT 1").fetchone()
    assert row is not None
    return int(row[0])


def test_start_url_stop_restart(cluster_dir: Path) -> None:
    assert devserver.url(cluster_dir) is None
    url = devserver.start(cluster_dir)
    assert url.startswith("postgresql://postgres@127.0.0.1:")
    assert url.endswith("/postgres")
    assert select_one(url) == 1
    assert devserver.start(cluster_dir) == url  # idempotent
    assert devserver.url(cluster_dir) == url
    assert devserver.is_running(cluster_dir)
    if os.geteuid() == 0:
        assert (cluster_dir / "data").stat().st_uid != 0  # run as the postgres user
    with psycopg.connect(url) as conn:
        settings = {
            name: conn.execute(f"SHOW {name}").fetchone()
            for name in ("listen_addresses", "unix_socket_directories")
        }
    assert settings == {
        "listen_addresses": ("127.0.0.1",),
        "unix_socket_directories": (str(cluster_dir),),
    }
    assert (cluster_dir / "postgres.log").exists()

    assert devserver.stop(cluster_dir) is True
    assert devserver.url(cluster_dir) is None
    assert not devserver.is_running(cluster_dir)
    assert devserver.stop(cluster_dir) is False
    with pytest.raises(psycopg.OperationalError):
        select_one(url)

    assert devserver.start(cluster_dir) == url  # the port is remembered
    assert select_one(url) == 1


def test_password_is_required_over_tcp(cluster_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    url = devserver.start(cluster_dir, password="s3cret-pw")
    assert "s3cret" not in url
    with pytest.raises(psycopg.OperationalError):
        select_one(url, password="wrong")
    with pytest.raises(psycopg.OperationalError):
        select_one(url)  # no password at all
    assert select_one(url, password="s3cret-pw") == 1
    monkeypatch.setenv("PGPASSWORD", "s3cret-pw")
    assert select_one(url) == 1


def test_explicit_port_and_failures(cluster_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        with pytest.raises(UsageError, match=f"port {taken}"):
            devserver.start(cluster_dir, port=taken)
    url = devserver.start(cluster_dir, port=taken)  # free now
    assert url == f"postgresql://postgres@127.0.0.1:{taken}/postgres"
    assert devserver.stop(cluster_dir)
    with pytest.raises(UsageError, match="without a password"):
        devserver.start(cluster_dir, password="x")

    with (cluster_dir / "data" / "postgresql.conf").open("a") as conf:
        conf.write("\nthis is not a setting\n")
    with pytest.raises(UsageError, match="did not start") as failed:
        devserver.start(cluster_dir)
    assert "syntax error" in str(failed.value)  # the tail of the server log


def test_refuses_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not a dev-server directory"):
        devserver.start(tmp_path)


def test_find_bin_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    found = devserver.find_bin_dir()
    assert (found / "initdb").exists()
    assert (found / "pg_ctl").exists()
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(devserver, "BIN_GLOB_ROOT", tmp_path / "nowhere")
    with pytest.raises(UsageError, match="initdb, pg_ctl"):
        devserver.find_bin_dir()


def test_cli_start_url_stop(cluster_dir: Path) -> None:
    runner = CliRunner()
    where = ["--dir", str(cluster_dir)]
    missing = runner.invoke(dev_server, ["url", *where])
    assert missing.exit_code == 1
    assert "no dev server running" in missing.output
    started = runner.invoke(dev_server, ["start", *where])
    assert started.exit_code == 0, started.output
    url = started.stdout.splitlines()[0]
    assert f"acode-sync init --remote {url}" in started.output
    assert f"export ACODE_SYNC_REMOTE_URL={url}" in started.output
    assert select_one(url) == 1
    shown = runner.invoke(dev_server, ["url", *where])
    assert (shown.exit_code, shown.stdout.strip()) == (0, url)
    stopped = runner.invoke(dev_server, ["stop", *where])
    assert stopped.exit_code == 0
    assert "Stopped" in stopped.output
    again = runner.invoke(dev_server, ["stop", *where])
    assert "No dev server running" in again.output


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(dev_server, ["start", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert result.output.startswith("Error: ")
