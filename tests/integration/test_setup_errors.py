"""A remote that answers and refuses us is a set-up error, not being offline.

Every broken set-up below is a real one (a password-auth cluster, a missing
database or role, a role never enrolled, an empty database, a URL libpq
cannot read, a port out of range), driven through the real CLI: each command
says so in one line naming the setting, exits 2 (``status --check``: 1),
``status`` shows mode ``error``, and no traceback appears anywhere. Being
offline (nobody listening) stays ACODE-SYNC-001, exit 1, mode ``offline``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from ulid import ULID

from acode_sync import devserver, store
from acode_sync.cli import acode, sync
from acode_sync.engine import connect_remote
from acode_sync.errors import SetupError
from acode_sync.remote import push_batch
from acode_sync.runner import Runner
from acode_sync.workspace import write
from tests.fix_pg import PgDatabase, admin_url
from tests.fix_sync import Device, FakeClock, make_device

RIGHT_PASSWORD = "right-horse-battery"
WRONG_PASSWORD = "wrong-staple-guess"
URL_PASSWORD = "s3cret-in-the-url"
STRANGER = "acode_test_stranger"  # logs in, never granted acode_sync_device
NOBODY = "acode_test_nobody"  # no such role


@dataclass(frozen=True)
class Broken:
    """One broken set-up: what the one line must say, for a cycle and for migrate."""

    gist: str
    migrate_gist: str
    code: str = "ACODE-SYNC-001"


CASES = {
    "wrong password": Broken(
        "password authentication failed for role postgres",
        "password authentication failed for role postgres",
    ),
    "missing database": Broken(
        "database acode_no_such_database does not exist",
        "database acode_no_such_database does not exist",
    ),
    "unenrolled role": Broken(
        f"role {STRANGER} is not enrolled",
        f"migrate --remote needs an admin role .* it ran as role {STRANGER}",
        code="ACODE-SYNC-002",
    ),
    "missing role": Broken(
        f"login role {NOBODY} does not exist",
        f"login role {NOBODY} does not exist",
    ),
    "unmigrated server": Broken(
        "lacks the acode-sync schema or a migration this version needs",
        "migrate --remote needs an admin role .* it ran as role acode_test_alice",
        code="ACODE-SYNC-002",
    ),
    "malformed URL": Broken("not a valid PostgreSQL URL", "not a valid PostgreSQL URL"),
    "port out of range": Broken("port '99999' is not a TCP port", "port '99999' is not a TCP port"),
}


@pytest.fixture(scope="module")
def password_cluster() -> Iterator[str]:
    """A private cluster that wants a password (the machine's trusts everyone)."""
    directory = Path(tempfile.mkdtemp(prefix="acode-password-"))
    try:
        yield devserver.start(directory, password=RIGHT_PASSWORD)
    finally:
        devserver.stop(directory)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def empty_database() -> Iterator[str]:
    """A database nobody ran 'migrate --remote' on; alice may connect to it."""
    name = f"acode_sync_empty_{os.getpid()}"
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def login_role(name: str, *, enrolled: bool) -> None:
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        grant = "GRANT acode_sync_device TO {}" if enrolled else "REVOKE acode_sync_device FROM {}"
        conn.execute(sql.SQL(grant).format(sql.Identifier(name)))


def broken_url(case: str, request: pytest.FixtureRequest, pg: PgDatabase) -> str:
    if case == "wrong password":
        params = conninfo_to_dict(request.getfixturevalue("password_cluster"))
        return make_conninfo("", **{**params, "password": WRONG_PASSWORD})
    if case == "missing database":
        return make_conninfo(pg.device_url(), dbname="acode_no_such_database")
    if case == "unenrolled role":
        login_role(STRANGER, enrolled=False)
        return pg.url(STRANGER)
    if case == "missing role":
        return pg.url(NOBODY)
    if case == "unmigrated server":
        return make_conninfo(pg.device_url(), dbname=request.getfixturevalue("empty_database"))
    if case == "malformed URL":
        return f"postgresql://acode_test_alice:{URL_PASSWORD}@[::1:5432/acode"
    if case == "port out of range":
        return "postgresql://acode_test_alice@127.0.0.1:99999/acode"
    raise AssertionError(case)


def cli(device: Device, *args: str) -> Result:
    return CliRunner().invoke(
        sync,
        [*args, "--workspace", str(device.workspace.root)],
        env={"ACODE_SYNC_REMOTE_URL": device.url, "PGPASSWORD": None},
    )


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


def assert_clean(result: Result | subprocess.CompletedProcess[str]) -> None:
    everything = f"{result.stdout}\n{result.stderr}"
    assert "Traceback" not in everything
    for secret in (WRONG_PASSWORD, RIGHT_PASSWORD, URL_PASSWORD):
        assert secret not in everything
    if isinstance(result, Result):
        assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("case", list(CASES))
def test_a_broken_setup_is_one_line_exit_2_and_mode_error(
    case: str, request: pytest.FixtureRequest, tmp_path: Path, pg: PgDatabase
) -> None:
    expected = CASES[case]
    device = make_device(tmp_path, "laptop", broken_url(case, request, pg))
    conn = device.db()
    store.add_message(conn, store.new_chat(conn, "t"), "m")
    before = conn.execute("SELECT seq, status, retry_count FROM sync_outbox").fetchall()

    # The real process, as a user or cron runs it: no traceback, one line.
    env = {**os.environ, "ACODE_SYNC_REMOTE_URL": device.url}
    env.pop("PGPASSWORD", None)
    now = subprocess.run(
        [sys.executable, "-m", "acode_sync", "now", "--workspace", str(device.workspace.root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert now.returncode == 2, now.stderr
    line = one_line(now.stderr)
    assert line.startswith(f"Error: {expected.code}: "), line
    assert re.search(expected.gist, line), line
    assert "(URL from ACODE_SYNC_REMOTE_URL)" in line  # names the setting that set the URL
    assert_clean(now)
    # Nothing an item did: no attempt used up, nothing marked.
    assert conn.execute("SELECT seq, status, retry_count FROM sync_outbox").fetchall() == before

    once = cli(device, "once")
    assert once.exit_code == 2
    assert one_line(once.stderr) == line
    assert once.stdout == ""
    assert_clean(once)

    status = cli(device, "status")
    assert status.exit_code == 0 and status.stderr == ""
    assert "Mode: Error" in status.stdout
    assert f"  Why: {line.removeprefix('Error: ')}" in status.stdout
    data = json.loads(cli(device, "status", "--json").stdout)
    assert (data["mode"], data["healthy"]) == ("error", False)
    check = cli(device, "status", "--check")
    assert check.exit_code == 1
    why = one_line(check.stderr)
    assert why.startswith("Unhealthy: sync cannot run until this is fixed: ")
    assert re.search(expected.gist, why)
    assert_clean(status)
    assert_clean(check)

    with write(conn):
        conn.execute("UPDATE sync_outbox SET status = 'Failed', next_retry_at = NULL")
    retry = cli(device, "retry", "--force")
    assert retry.exit_code == 2
    assert one_line(retry.stderr) == line
    assert_clean(retry)

    migrate = cli(device, "migrate", "--remote")
    assert migrate.exit_code == 2
    told = one_line(migrate.stderr)
    assert re.search(expected.migrate_gist, told), told
    assert "(URL from ACODE_SYNC_REMOTE_URL)" in told
    assert_clean(migrate)

    # Every other command: those that stay local work; resume's cycle says the
    # same one line as once (run is the loop, tested below).
    for args, code in (
        (("queue",), 0),
        (("queue", "--json"), 0),
        (("queue", "--errors"), 0),
        (("conflicts",), 0),
        (("metrics",), 0),
        (("pause",), 0),
        (("resume",), 2),
    ):
        result = cli(device, *args)
        assert result.exit_code == code, (args, result.output)
        assert_clean(result)
        if code:
            assert one_line(result.stderr) == line
    shown = CliRunner().invoke(
        acode,
        ["chat", "list", "--workspace", str(device.workspace.root)],
        env={"ACODE_SYNC_REMOTE_URL": device.url},
    )
    assert shown.exit_code == 0
    assert_clean(shown)
    conn.close()


def test_the_message_names_the_config_file_when_that_set_the_url(tmp_path: Path) -> None:
    device = make_device(tmp_path, "laptop", "")
    path = device.workspace.config_path
    path.write_text(
        path.read_text().replace(
            "url: null", "url: postgresql://acode_test_alice@127.0.0.1:99999/acode  #"
        )
    )
    result = CliRunner().invoke(
        sync, ["now", "--workspace", str(device.workspace.root)], env={"ACODE_SYNC_REMOTE_URL": ""}
    )
    assert result.exit_code == 2
    assert f"(URL from sync.remote.url in {path})" in one_line(result.stderr)


def test_being_offline_is_still_001_exit_1_and_mode_offline(tmp_path: Path) -> None:
    device = make_device(tmp_path, "laptop", "postgresql://acode_test_alice@127.0.0.1:1/acode")
    now = cli(device, "now")
    assert now.exit_code == 1
    assert re.fullmatch(
        r"Error: ACODE-SYNC-001: cannot connect to \S+: Connection refused", one_line(now.stderr)
    )
    assert json.loads(cli(device, "status", "--json").stdout)["mode"] == "offline"
    assert_clean(now)


# -- the background processor ---------------------------------------------------


def counting(attempts: list[str]) -> Any:
    def connect(url: str) -> psycopg.Connection[Any]:
        attempts.append(url)
        return connect_remote(url)

    return connect


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_run_survives_a_refusal_logs_it_once_and_retries_at_the_backoff_cap(
    tmp_path: Path, pg: PgDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    login_role(STRANGER, enrolled=False)
    clock = FakeClock()
    device = make_device(tmp_path, "laptop", pg.url(STRANGER))
    device.clock = clock
    conn = device.db()
    store.new_chat(conn, "waits for an admin")
    conn.close()
    attempts: list[str] = []
    engine = device.engine()
    engine.connect = counting(attempts)
    caplog.set_level(logging.DEBUG, logger="acode_sync")
    # The engine's thread runs Supervisor.cycle() and then waits Supervisor.wait():
    # the same two steps here, on the fake clock.
    runner = Runner(engine, interval=5, clock=clock)
    timeouts: list[float] = []
    for _ in range(4):
        runner.cycle()  # never raises: a refusal is a state of the loop
        timeouts.append(runner.wait())
        clock.advance(timeouts[-1])
    cap = float(engine.config.retry.max_delay_seconds)
    assert timeouts == [cap] * 4  # not the 5 s poll: the cap, between attempts
    assert len(attempts) == 4
    (logged,) = refusals(caplog)  # once for the episode, not once per attempt
    assert f"role {STRANGER} is not enrolled" in logged
    assert f"trying again every {cap:g}s" in logged
    data = json.loads(cli(device, "status", "--json").stdout)
    assert data["mode"] == "error"


def test_a_refusal_is_logged_again_after_recovery_and_polling_resumes(
    tmp_path: Path, pg: PgDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    role = "acode_test_latecomer"
    login_role(role, enrolled=False)
    try:
        clock = FakeClock()
        device = make_device(tmp_path, "laptop", pg.url(role), **{"retry.max_delay_seconds": 60})
        device.clock = clock
        conn = device.db()
        store.new_chat(conn, "t")
        attempts: list[str] = []
        engine = device.engine()
        engine.connect = counting(attempts)
        runner = Runner(engine, interval=5, clock=clock)
        caplog.set_level(logging.WARNING, logger="acode_sync")
        runner.cycle()
        for _ in range(11):  # 55 s of polls: all inside the cap, none tries
            clock.advance(5)
            runner.cycle()
        assert (len(attempts), len(refusals(caplog))) == (1, 1)
        clock.advance(5)  # 60 s: the cap is over
        runner.cycle()
        assert (len(attempts), len(refusals(caplog))) == (2, 1)  # same reason: no new line

        login_role(role, enrolled=True)  # an admin enrolls it
        clock.advance(60)
        runner.cycle()
        assert len(attempts) == 3
        assert any("accepts us again" in r.getMessage() for r in caplog.records)
        synced = conn.execute("SELECT count(*) FROM sync_outbox WHERE status = 'Synced'")
        assert synced.fetchone()[0] == 1
        assert json.loads(cli(device, "status", "--json").stdout)["mode"] == "online"

        login_role(role, enrolled=False)  # and takes it back: a new episode
        store.new_chat(conn, "u")
        clock.advance(5)
        runner.cycle()  # polling again at the poll interval
        assert (len(attempts), len(refusals(caplog))) == (4, 2)
        conn.close()
    finally:
        login_role(role, enrolled=False)


def test_an_unenrolled_push_says_its_one_error_and_logs_nothing_else(
    pg: PgDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """The push's three pipelined statements all fail for a role never
    enrolled. However the error reaches psycopg (while a statement is sent,
    or when the pipeline is synced), the cycle gets the one SetupError and
    psycopg logs no second error ("error ignored terminating the pipeline",
    which its last-resort handler printed as a second line on standard error
    and broke `now`'s one line now and then)."""
    login_role(STRANGER, enrolled=False)
    caplog.set_level(logging.WARNING)
    with connect_remote(pg.url(STRANGER)) as conn:
        for _ in range(40):
            with pytest.raises(SetupError, match=f"role {STRANGER} is not enrolled"):
                push_batch(conn, str(ULID()), "laptop", "[]")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("psycopg")] == []
