"""Operating sync against the real PostgreSQL: status, pause/resume, retry,
metrics, and the background processor (its loop, offline survival, signals)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import click
import psycopg
import pytest
import yaml
from click.testing import CliRunner, Result
from prometheus_client.parser import text_string_to_metric_families

from acode_sync import store
from acode_sync.cli import sync
from acode_sync.engine import SyncEngine, connect_remote
from acode_sync.errors import UsageError
from acode_sync.health import JSON_KEYS
from acode_sync.runner import Runner
from acode_sync.workspace import write
from tests.fix_sync import Device, FakeClock, corrupt

UNREACHABLE = "postgresql://acode_test_alice@127.0.0.1:1/nothing"
WAIT_SECONDS = 10.0


def commands() -> click.Group:
    return sync


def run_cli(device: Device, *args: str, url: str | None = None) -> Result:
    return CliRunner().invoke(
        commands(),
        [*args, "--workspace", str(device.workspace.root)],
        env={"ACODE_SYNC_REMOTE_URL": url or device.url},
    )


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {WAIT_SECONDS}s waiting for {what}")
        time.sleep(0.05)


def open_rows(device: Device) -> int:
    conn = device.db()
    try:
        row = conn.execute(
            "SELECT count(*) FROM sync_outbox WHERE status IN ('Pending', 'Failed')"
        ).fetchone()
        return int(row[0])
    finally:
        conn.close()


def server_count(server: psycopg.Connection[Any], table: str) -> int:
    row = server.execute(f"SELECT count(*) FROM acode_sync.{table}").fetchone()
    assert row is not None
    return int(row[0])


def spoil(conn: Any, entity_id: str, role: str = "narrator") -> None:
    """Give an outbox row a payload the server rejects (or, with a good role, fix it)."""
    corrupt(conn, entity_id, "role", role)


# -- status -------------------------------------------------------------------


def test_status_block_has_the_manual_shape(alice: Device) -> None:
    before = run_cli(alice, "status")
    assert before.exit_code == 0, before.output
    assert "Last Sync: never" in before.output
    assert "  Last pull: never" in before.output
    conn = alice.db()
    chat = store.new_chat(conn, "Feature: Auth")
    store.add_message(conn, chat, "hello")
    conn.close()
    alice.sync()
    result = run_cli(alice, "status")
    assert result.exit_code == 0, result.output
    patterns = [
        r"Sync Status",
        "─" * 36,
        r"Mode: Online",
        r"Last Sync: \d+s ago",
        r"Queue: 0 pending",
        r"",
        r"Local → Remote:",
        r"  Pending: 0",
        r"  Synced today: 2",
        r"  Failed: 0",
        r"",
        r"Remote → Local:",
        r"  Last pull: (never|\d+s ago)",
        r"  Downloaded today: \d+",
    ]
    lines = result.output.rstrip("\n").split("\n")
    assert len(lines) == len(patterns), result.output
    for line, pattern in zip(lines, patterns, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)


def test_status_json_has_exactly_the_contract_keys(alice: Device) -> None:
    conn = alice.db()
    store.new_chat(conn, "t")
    conn.close()
    data = json.loads(run_cli(alice, "status", "--json").stdout)
    assert tuple(data) == JSON_KEYS
    assert (data["mode"], data["paused"], data["pending"], data["failed"]) == (
        "online",
        False,
        1,
        0,
    )
    assert data["last_push_at"] is None and data["healthy"] is True
    alice.sync()
    data = json.loads(run_cli(alice, "status", "--json").stdout)
    assert (data["pending"], data["synced_today"], data["lag_seconds"]) == (0, 1, 0)
    assert data["last_push_at"].endswith("Z")


def test_check_exits_1_when_an_item_failed_or_the_remote_was_never_reached(
    alice: Device,
) -> None:
    assert run_cli(alice, "status", "--check").exit_code == 0
    conn = alice.db()
    chat = store.new_chat(conn, "t")
    message = store.add_message(conn, chat, "bad")
    spoil(conn, message)
    alice.sync()
    unhealthy = run_cli(alice, "status", "--check")
    assert unhealthy.exit_code == 1
    assert "  Failed: 1" in unhealthy.output
    assert "Unhealthy: 1 item(s) failed for good" in unhealthy.output

    fresh = Device("offline", alice.workspace, UNREACHABLE, {})
    with write(conn):
        conn.execute("DELETE FROM sync_outbox")
        conn.execute("UPDATE sync_state SET last_push_at = NULL, last_pull_at = NULL")
        conn.execute("UPDATE sync_link SET last_contact_at = NULL, down_since = NULL")
    conn.close()
    assert run_cli(fresh, "now").exit_code == 1  # ACODE-SYNC-001, recorded
    offline = run_cli(fresh, "status", "--json", "--check")
    assert offline.exit_code == 1
    assert '"mode": "offline"' in offline.output
    assert "Unhealthy: remote never reached (ACODE-SYNC-001" in offline.output


# -- pause / resume (scenario 5) ----------------------------------------------


def test_pause_queues_locally_and_resume_drains_the_queue(
    alice: Device, server: psycopg.Connection[Any]
) -> None:
    paused = run_cli(alice, "pause")
    assert paused.output == "Sync paused. Changes will queue locally.\n"
    conn = alice.db()
    chat = store.new_chat(conn, "while paused")
    store.add_message(conn, chat, "one")
    store.add_message(conn, chat, "two")
    now = run_cli(alice, "now")
    assert now.exit_code == 0 and "paused" in now.output
    assert alice.sync().paused  # the engine itself refuses too
    assert server_count(server, "changes") == 0
    assert "Mode: Paused" in run_cli(alice, "status").output
    resumed = run_cli(alice, "resume")
    assert resumed.exit_code == 0, resumed.output
    assert resumed.output.startswith("Sync resumed. Processing queue...\nSyncing...\n")
    assert "  ↑ Uploaded: 3 items" in resumed.output
    assert server_count(server, "messages") == 2
    assert open_rows(alice) == 0
    assert conn.execute("SELECT paused FROM sync_state").fetchone()[0] == 0
    conn.close()


# -- retry --------------------------------------------------------------------


def test_retry_shows_a_cross_until_the_item_is_fixed_then_a_tick(
    alice: Device, server: psycopg.Connection[Any]
) -> None:
    conn = alice.db()
    chat = store.new_chat(conn, "t")
    message = store.add_message(conn, chat, "will be rejected")
    spoil(conn, message)
    assert alice.sync().push.rejected == 1
    again = run_cli(alice, "retry")
    assert again.exit_code == 1
    lines = again.output.splitlines()
    assert lines[0] == "Retrying 1 failed item..."
    assert lines[1].startswith(f"  ✗ {message}: still failing (ACODE-SYNC-005: invalid payload")
    row = conn.execute(
        "SELECT status, retry_count, next_retry_at FROM sync_outbox WHERE entity_id = ?",
        (message,),
    ).fetchone()
    assert tuple(row) == ("Failed", 0, None)

    spoil(conn, message, role="user")
    fixed = run_cli(alice, "retry")
    assert fixed.exit_code == 0, fixed.output
    assert fixed.output == f"Retrying 1 failed item...\n  ✓ {message}: synced\n"
    assert server_count(server, "messages") == 1
    assert run_cli(alice, "retry").output == "No failed items to retry.\n"
    conn.close()


def test_retry_leaves_backoff_alone_unless_forced(
    alice: Device, server: psycopg.Connection[Any]
) -> None:
    conn = alice.db()
    chat = store.new_chat(conn, "t")
    with write(conn):  # as if the link had failed twice: waiting out a backoff
        conn.execute(
            "UPDATE sync_outbox SET status = 'Failed', retry_count = 2, "
            "next_retry_at = '2999-01-01T00:00:00.000Z', "
            "last_error = 'ACODE-SYNC-001: connection lost: reset'"
        )
    waiting = run_cli(alice, "retry")
    assert waiting.exit_code == 0
    assert waiting.output == (
        "No failed items to retry.\n"
        "1 item still waiting out a backoff; 'acode sync retry --force' retries them now.\n"
    )
    forced = run_cli(alice, "retry", "--force")
    assert forced.exit_code == 0, forced.output
    assert forced.output == f"Retrying 1 failed item...\n  ✓ {chat}: synced\n"
    assert server_count(server, "chats") == 1
    conn.close()


def test_retry_while_paused_requeues_and_waits_for_resume(alice: Device) -> None:
    conn = alice.db()
    chat = store.new_chat(conn, "t")
    with write(conn):
        conn.execute("UPDATE sync_outbox SET status = 'Failed', last_error = 'ACODE-SYNC-004: x'")
    run_cli(alice, "pause")
    paused = run_cli(alice, "retry")
    assert paused.exit_code == 0
    assert paused.output.splitlines() == [
        "Retrying 1 failed item...",
        "Sync is paused: they are queued and go on 'acode sync resume'.",
    ]
    assert (
        conn.execute("SELECT status FROM sync_outbox WHERE entity_id = ?", (chat,)).fetchone()[0]
        == "Pending"
    )
    assert "↑ Uploaded: 1 item" in run_cli(alice, "resume").output
    conn.close()


# -- metrics --------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_command_prints_the_gauges(alice: Device) -> None:
    conn = alice.db()
    store.add_message(conn, store.new_chat(conn, "t"), "m")
    conn.close()
    found = samples(run_cli(alice, "metrics").output)
    assert found[("acode_sync_queue_depth", (("status", "pending"),))] == 2
    assert found[("acode_sync_last_push_timestamp_seconds", ())] == 0
    alice.sync()
    found = samples(run_cli(alice, "metrics").output)
    assert found[("acode_sync_queue_depth", (("status", "pending"),))] == 0
    assert found[("acode_sync_synced_today", ())] == 2
    assert found[("acode_sync_last_push_timestamp_seconds", ())] > time.time() - 60
    assert found[("acode_sync_healthy", ())] == 1


# -- the background processor -------------------------------------------------------


def start(runner: Runner) -> tuple[threading.Thread, list[int]]:
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(runner.run()), daemon=True)
    thread.start()
    return thread, codes


def stop(runner: Runner, thread: threading.Thread, codes: list[int]) -> None:
    runner.request_stop()
    thread.join(WAIT_SECONDS)
    assert not thread.is_alive()
    assert codes == [0]


def test_run_loop_uploads_serves_metrics_and_stops_cleanly(
    alice: Device, server: psycopg.Connection[Any]
) -> None:
    runner = Runner(alice.engine(), interval=0.05, metrics_port=0)
    thread, codes = start(runner)
    conn = alice.db()
    chat = store.new_chat(conn, "from the loop")
    for i in range(5):
        store.add_message(conn, chat, f"m{i}")
    conn.close()
    wait_until(lambda: server_count(server, "messages") == 5 and open_rows(alice) == 0, "sync")
    assert runner.metrics_url is not None
    url = runner.metrics_url

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(url, timeout=5) as response:
            return samples(response.read().decode())

    # The cycle is counted when it ends, a moment after its rows are marked.
    cycle_ok = ("acode_sync_cycles_total", (("outcome", "ok"),))
    wait_until(lambda: cycle_ok in scrape(), "a cycle counted")
    scraped = scrape()
    assert scraped[("acode_sync_queue_depth", (("status", "pending"),))] == 0
    assert scraped[("acode_sync_synced_today", ())] == 6
    assert scraped[("acode_sync_cycles_total", (("outcome", "ok"),))] >= 1
    port = int(runner.metrics_url.rsplit(":", 1)[1].split("/")[0])
    taken = Runner(alice.engine(), metrics_port=port)
    with pytest.raises(UsageError, match=f"--metrics-port {port}: cannot listen"):
        taken.run()
    stop(runner, thread, codes)
    with pytest.raises(OSError):  # the metrics server is gone with the loop
        urllib.request.urlopen(runner.metrics_url, timeout=2)


def test_run_loop_survives_an_unreachable_remote_and_uploads_once_it_answers(
    alice: Device, server: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[str] = []

    def flaky(url: str) -> psycopg.Connection[Any]:
        attempts.append(url)  # the first three attempts find nobody listening
        return connect_remote(UNREACHABLE if len(attempts) <= 3 else url)

    conn = alice.db()
    store.add_message(conn, store.new_chat(conn, "offline first"), "queued while offline")
    conn.close()
    engine = SyncEngine(alice.workspace, alice.config, connect=flaky)
    runner = Runner(engine, interval=0.05)
    caplog.set_level(logging.WARNING, logger="acode_sync")
    thread, codes = start(runner)
    wait_until(lambda: open_rows(alice) == 0, "the queue to drain")
    stop(runner, thread, codes)
    assert len(attempts) >= 4
    assert server_count(server, "messages") == 1
    offline_lines = [r for r in caplog.records if "changes queue locally" in r.getMessage()]
    assert len(offline_lines) == 1  # one line when it goes offline, not one per cycle
    assert "ACODE-SYNC-001" in offline_lines[0].getMessage()
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    data = json.loads(run_cli(alice, "status", "--json").stdout)
    assert (data["mode"], data["healthy"]) == ("online", True)


def test_a_second_signal_stops_at_once(alice: Device) -> None:
    runner = Runner(alice.engine(), interval=60)
    runner.handle_signal(signal.SIGTERM, None)
    assert runner.stop.wait(WAIT_SECONDS)  # first: finish the cycle, then leave
    with pytest.raises(SystemExit) as stopped:
        runner.handle_signal(signal.SIGINT, None)
    assert stopped.value.code == 1


LAUNCH = "from acode_sync.cli import sync\nsync(prog_name='acode-sync')\n"


def test_run_command_exits_0_on_sigterm_after_syncing(
    alice: Device, server: psycopg.Connection[Any]
) -> None:
    document = yaml.safe_load(alice.workspace.config_path.read_text())
    document["sync"]["upload"]["poll_interval_seconds"] = 0.1
    alice.workspace.config_path.write_text(yaml.safe_dump(document))
    env = {**os.environ, "ACODE_SYNC_REMOTE_URL": alice.url, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-c", LAUNCH, "run", "--workspace", str(alice.workspace.root)]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("Running: polling every 0.1s.")
        conn = alice.db()
        store.new_chat(conn, "via the daemon")
        conn.close()
        wait_until(lambda: server_count(server, "chats") == 1, "the daemon to upload")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=WAIT_SECONDS)
    assert process.returncode == 0, err
    assert out == "Stopped.\n"
    assert "SIGTERM: stopping after the current cycle" in err


def test_run_pulls_on_its_own_cadence(alice: Device, server: psycopg.Connection[Any]) -> None:

    conn = alice.db()
    chat = store.new_chat(conn, "v1")
    clock = FakeClock()
    alice.clock = clock
    runner = Runner(alice.engine(), interval=0, clock=clock)  # download cadence: 30 s
    runner.cycle()
    server.execute("UPDATE acode_sync.chats SET title = 'changed on the server'")

    def title() -> str:
        return str(conn.execute("SELECT title FROM chats WHERE id = ?", (chat,)).fetchone()[0])

    clock.advance(5)
    runner.cycle()  # an upload poll, not yet a pull
    assert title() == "v1"
    clock.advance(25)
    runner.cycle()
    assert title() == "changed on the server"
    conn.close()
