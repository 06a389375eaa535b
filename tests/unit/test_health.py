"""The health figures on a real local database: queue depth, lag, today's
counts, failure rate, mode and the healthy rule, and their Prometheus form."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from acode_sync import store
from acode_sync.clock import iso
from acode_sync.config import SyncConfig
from acode_sync.health import JSON_KEYS, figures, metrics_text
from acode_sync.workspace import write

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
REMOTE = SyncConfig(device_id="dev", remote_url="postgresql://someone@127.0.0.1:5432/db")
LOCAL = SyncConfig(device_id="dev")


def at(seconds_before: float) -> str:
    return iso(NOW - timedelta(seconds=seconds_before))


def chat_with_messages(conn: sqlite3.Connection, count: int) -> list[int]:
    """A chat and ``count`` messages; returns their outbox seqs, oldest first."""
    chat = store.new_chat(conn, "t")
    for i in range(count):
        store.add_message(conn, chat, f"m{i}")
    return [seq for (seq,) in conn.execute("SELECT seq FROM sync_outbox ORDER BY seq")]


def set_row(conn: sqlite3.Connection, seq: int, **columns: object) -> None:
    assignments = ", ".join(f"{name} = ?" for name in columns)
    with write(conn):
        conn.execute(
            f"UPDATE sync_outbox SET {assignments} WHERE seq = ?", (*columns.values(), seq)
        )


def set_state(conn: sqlite3.Connection, **columns: object) -> None:
    assignments = ", ".join(f"{name} = ?" for name in columns)
    with write(conn):
        conn.execute(f"UPDATE sync_state SET {assignments} WHERE id = 1", tuple(columns.values()))


def note(conn: sqlite3.Connection, message: str, kind: str | None, seconds_ago: float) -> None:
    """Record a failure the way the engine does: its message, time and kind."""
    with write(conn):
        conn.execute(
            "UPDATE sync_state SET last_error = ?, last_error_at = ? WHERE id = 1",
            (message, at(seconds_ago)),
        )
        conn.execute("UPDATE sync_last_error SET kind = ? WHERE id = 1", (kind,))


def test_a_fresh_database_is_quiet_and_healthy(bare_db: sqlite3.Connection) -> None:
    health = figures(bare_db, NOW, REMOTE)
    assert (health.mode, health.pending, health.failed, health.conflicts) == ("online", 0, 0, 0)
    assert (health.lag_seconds, health.failure_rate, health.healthy) == (0.0, 0.0, True)
    assert health.last_sync_at is None
    assert tuple(health.as_json()) == JSON_KEYS
    assert figures(bare_db, NOW, LOCAL).mode == "offline"  # no remote to be online with


def test_pending_failed_and_lag(bare_db: sqlite3.Connection) -> None:
    seqs = chat_with_messages(bare_db, 4)
    for seq, age in zip(seqs, (900, 600, 120, 60, 30), strict=True):
        set_row(bare_db, seq, created_at=at(age))
    set_row(bare_db, seqs[0], status="Failed", next_retry_at=None, last_error="ACODE-SYNC-005: x")
    set_row(bare_db, seqs[1], status="Failed", next_retry_at=at(-60), retry_count=2)
    set_row(bare_db, seqs[4], status="Synced", synced_at=at(10))
    health = figures(bare_db, NOW, REMOTE)
    assert (health.pending, health.waiting, health.failed) == (2, 1, 1)
    # The row rejected for good does not pin the lag: the oldest pending is 600 s old.
    assert health.lag_seconds == 600.0
    assert health.failure_rate == pytest.approx(2 / 3)  # 2 Failed rows, 1 synced recently
    assert not health.healthy
    assert any("failed for good" in p for p in health.problems)
    assert any("lag 600s" in p for p in health.problems)


def test_lag_over_the_limit_is_unhealthy_only_with_a_remote_and_not_paused(
    bare_db: sqlite3.Connection,
) -> None:
    (seq,) = chat_with_messages(bare_db, 0)
    set_row(bare_db, seq, created_at=at(301))
    assert not figures(bare_db, NOW, REMOTE).healthy
    assert figures(bare_db, NOW, LOCAL).healthy
    set_state(bare_db, paused=1)
    paused = figures(bare_db, NOW, REMOTE)
    assert (paused.mode, paused.paused, paused.healthy) == ("paused", True, True)
    set_row(bare_db, seq, created_at=at(299))
    set_state(bare_db, paused=0)
    assert figures(bare_db, NOW, REMOTE).healthy


def test_a_disabled_engine_reads_as_paused(bare_db: sqlite3.Connection) -> None:
    disabled = SyncConfig(**{**REMOTE.__dict__, "enabled": False})
    assert figures(bare_db, NOW, disabled).mode == "paused"


def test_today_counts_start_at_utc_midnight(bare_db: sqlite3.Connection) -> None:
    seqs = chat_with_messages(bare_db, 2)
    set_row(bare_db, seqs[0], status="Synced", synced_at="2026-11-24T23:59:59.999Z")
    set_row(bare_db, seqs[1], status="Synced", synced_at="2026-11-25T00:00:00.000Z")
    set_row(bare_db, seqs[2], status="Superseded", synced_at="2026-11-25T08:00:00.000Z")
    with write(bare_db):
        for seq, applied in ((1, "2026-11-24T23:00:00.000Z"), (2, "2026-11-25T11:00:00.000Z")):
            bare_db.execute(
                "INSERT INTO sync_inbox (seq, idempotency_key, entity_type, entity_id, version, "
                "changed_at, payload, status, applied_at) "
                "VALUES (?, ?, 'chat', 'c', 1, ?, '{}', 'Applied', ?)",
                (seq, f"k{seq}", applied, applied),
            )
        bare_db.execute(
            "INSERT INTO sync_inbox (seq, idempotency_key, entity_type, entity_id, version, "
            "changed_at, payload) VALUES (3, 'k3', 'chat', 'c', 2, ?, '{}')",
            (at(60),),
        )
    health = figures(bare_db, NOW, REMOTE)
    assert (health.synced_today, health.downloaded_today) == (1, 1)
    # The same instant seen from another time zone is still the same UTC day.
    local_now = NOW.astimezone(timezone(timedelta(hours=-13)))
    assert figures(bare_db, local_now, REMOTE).synced_today == 1


def set_link(conn: sqlite3.Connection, **columns: object) -> None:
    assignments = ", ".join(f"{name} = ?" for name in columns)
    with write(conn):
        conn.execute(f"UPDATE sync_link SET {assignments} WHERE id = 1", tuple(columns.values()))


def test_offline_is_a_link_failure_since_the_last_contact(bare_db: sqlite3.Connection) -> None:
    error = "ACODE-SYNC-001: cannot connect to postgresql://x@h:1/db: refused"
    set_state(bare_db, last_error=error, last_error_at=at(5))
    set_link(bare_db, last_contact_at=at(300), down_since=at(200))
    health = figures(bare_db, NOW, REMOTE)
    assert (health.mode, health.healthy) == ("offline", True)  # 5 minutes: not yet alarming
    assert health.last_sync_at == at(300)
    set_link(bare_db, last_contact_at=at(601))
    late = figures(bare_db, NOW, REMOTE)
    assert (late.mode, late.healthy) == ("offline", False)
    assert "unreachable for 601s" in late.problems[0]
    set_link(bare_db, last_contact_at=at(1), down_since=None)  # the server answered again
    assert figures(bare_db, NOW, REMOTE).mode == "online"
    note(bare_db, "message m: ACODE-SYNC-005: invalid", None, 0.5)
    assert figures(bare_db, NOW, REMOTE).mode == "online"  # not a link failure
    # The kind decides, not the code in the text: a refusal at login is 001 too.
    note(bare_db, "ACODE-SYNC-001: h refused us: password authentication failed", "setup", 0.5)
    assert figures(bare_db, NOW, REMOTE).mode == "error"


def test_a_refusal_is_mode_error_and_unhealthy_at_once(bare_db: sqlite3.Connection) -> None:
    set_link(bare_db, last_contact_at=at(60))
    refusal = "ACODE-SYNC-002: the remote is not ready for acode-sync: role r is not enrolled"
    note(bare_db, refusal, "setup", 1)
    health = figures(bare_db, NOW, REMOTE)
    assert (health.mode, health.healthy, health.reason) == ("error", False, refusal)
    assert health.problems == (f"sync cannot run until this is fixed: {refusal}",)
    assert health.as_json()["mode"] == "error"
    assert figures(bare_db, NOW, LOCAL).mode == "offline"  # no remote: nothing refuses us
    set_state(bare_db, paused=1)
    assert figures(bare_db, NOW, REMOTE).mode == "paused"  # a choice comes first
    set_state(bare_db, paused=0)
    set_link(bare_db, last_contact_at=at(0))  # the server answered since: fixed
    assert (figures(bare_db, NOW, REMOTE).mode, figures(bare_db, NOW, REMOTE).healthy) == (
        "online",
        True,
    )


def test_last_sync_is_the_last_contact_not_the_last_complete_push(
    bare_db: sqlite3.Connection,
) -> None:
    # A cycle uploaded (contact noted per batch) and then lost its link: no
    # last_push_at, but the server did answer.
    set_state(bare_db, last_push_at=None, last_error="ACODE-SYNC-001: connection lost")
    set_link(bare_db, last_contact_at=at(30), down_since=at(10))
    health = figures(bare_db, NOW, REMOTE)
    assert health.last_sync_at == at(30)
    assert (health.mode, health.healthy) == ("offline", True)
    assert not any("never reached" in p for p in health.problems)


def test_never_reached_and_offline_is_unhealthy(bare_db: sqlite3.Connection) -> None:
    note(bare_db, "ACODE-SYNC-001: cannot connect", "link", 1)
    set_link(bare_db, down_since=at(1))
    health = figures(bare_db, NOW, REMOTE)
    assert (health.mode, health.healthy) == ("offline", False)
    assert "never reached" in health.problems[0]


def test_only_unacknowledged_conflicts_count(bare_db: sqlite3.Connection) -> None:
    with write(bare_db):
        for acknowledged in (None, None, at(5)):
            bare_db.execute(
                "INSERT INTO sync_conflicts (entity_type, entity_id, detected_by, policy, winner, "
                "local_version, remote_version, acknowledged_at) "
                "VALUES ('chat', 'c', 'push', 'last_write_wins', 'remote', 1, 2, ?)",
                (acknowledged,),
            )
    health = figures(bare_db, NOW, REMOTE)
    assert (health.conflicts, health.healthy) == (2, True)


def test_metrics_text_has_the_gauges_and_leaves_the_global_registry_alone(
    bare_db: sqlite3.Connection,
) -> None:
    for seq in chat_with_messages(bare_db, 1):
        set_row(bare_db, seq, created_at=at(10))
    set_state(bare_db, last_push_at="2026-11-25T11:59:00.000Z")
    text = metrics_text(figures(bare_db, NOW, REMOTE))
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("acode_sync_queue_depth", (("status", "pending"),))] == 2
    assert samples[("acode_sync_queue_depth", (("status", "failed"),))] == 0
    assert samples[("acode_sync_mode", (("mode", "online"),))] == 1
    assert samples[("acode_sync_mode", (("mode", "paused"),))] == 0
    assert samples[("acode_sync_mode", (("mode", "error"),))] == 0
    assert samples[("acode_sync_last_push_timestamp_seconds", ())] == (
        datetime(2026, 11, 25, 11, 59, tzinfo=UTC).timestamp()
    )
    assert samples[("acode_sync_last_pull_timestamp_seconds", ())] == 0
    assert samples[("acode_sync_lag_seconds", ())] == 10
    for name in ("conflicts", "synced_today", "downloaded_today", "failure_ratio", "paused"):
        assert samples[(f"acode_sync_{name}", ())] == 0
    assert samples[("acode_sync_healthy", ())] == 1
    assert "# TYPE acode_sync_lag_seconds gauge" in text
    assert b"acode_sync" not in generate_latest(REGISTRY)
