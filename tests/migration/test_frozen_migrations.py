"""Released migrations are frozen: their files never change, and the runner
refuses a database that recorded a file which now ships different.

A new migration is pinned here in the commit that releases it; from then on a
change to its file is a new migration, never an edit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from acode_sync.errors import EXIT_USAGE, MigrationChanged
from acode_sync.migrations import migrate_local, migrate_remote, shipped
from acode_sync.workspace import connect

PINNED = {
    "postgres": {
        "0001_server_schema": "64a206b2d31665a4fa6c788dabe1c93f5cbc652e61b58af29cebb79e96353cc2",
        "0002_withdrawn_chat_messages": (
            "cfa58b3f1555e1a8d2e16ba50d508537323623d6298fbd0134e9f7167efe59d9"
        ),
        "0003_lean_pull": "10ed7bece62bc984c99dc0690c00ec1786faf5d1509e247b1fa933e3485e305c",
        "0004_named_push": "9661a4ffafa535cf58ca473004e797aaab2f9bd33d1668bf0192ccd7ba955669",
        "0005_compact_log": "c33225457a7e6b62ca0f986c4b20f3faecf87e727ecaa56743e67609b15005a3",
        "0006_plans_for_new_owners": (
            "fc75fbba1b7c4745bcc70d096ff15b2688c40926122da9c2fdf0c2112232c57f"
        ),
        "0007_lean_push": "19685fbfc95d664d01723e02ec8170aa70de0b6ef868a12e4d4abd5e3123d2c6",
        "0008_planned_push": "31aebe16a9aca96ca65a2df657cce2c3a2ff7e6db31255587ae91bc3c1c07b7f",
        "0009_one_time_check_fewer": (
            "0d5718a8b734365f23b77357c5f60e089f599c34d31e892b2713d4f22fdbbfa4"
        ),
    },
    "sqlite": {
        "0001_local_schema": "75f569c194bb6f44af1166c899b0841ea10d06a998526fd2f141db69713d1a7d",
        "0002_recapture_changed_levels": (
            "751867f2efd0fdf19e75dc6559c8eae0cc15873dd79e44520cea619edafcd39e"
        ),
        "0003_edges": "36d8ffa6eb04727f929288dbb2e87aaf8a6b103a96312abc750b3812e7e4186f",
        "0004_lean_history": "2494d1a03e6e96fbe81a645eb91b0bad01417adc0c5bd750a73a9eb0e50b52e7",
        "0005_migration_checksums": (
            "4b4e12a5ffbd8823facfd0873a69d45eaff531536897b5c52d8d708a2a88d675"
        ),
        "0006_queue_figures_index": (
            "0098b7fa0441cae819de052ca993085fc131a3c5fd2b94c2243eefaf5bfd5fae"
        ),
        "0007_incremental_vacuum": (
            "0ad8a454b06ac6329518b62acbf7e5353598a3e8c0ecf58d72f939d6032d869b"
        ),
        "0008_cheap_capture": "1895d8d590779378c2fa8e4846b0943b3e74e391bb094a114b899e2a7a8d09e5",
        "0009_health_figures_indexes": (
            "57bef0c96929bbdd5866ed8a4f50858405e5d3c3f8ee5b689ec7fb98f1a61feb"
        ),
        "0010_queue_tally": "240d474db862a85e5064dd1bdf45d45afd59179922027560920c0f75973ed067",
    },
}
CHANGED = "0" * 64


@pytest.mark.parametrize("side", list(PINNED))
def test_every_shipped_migration_is_pinned_and_unchanged(side: str) -> None:
    found = {m.name: m.sha256 for m in shipped(side)}
    assert found == PINNED[side], (
        f"a released {side} migration was edited, removed or added without being pinned: "
        "write a new migration instead of editing one; pin a new one here when it is released"
    )


def test_the_runner_records_checksums_and_refuses_a_changed_server_file(empty_db: str) -> None:
    migrate_remote(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        recorded: dict[str, str | None] = dict(
            conn.execute("SELECT name, sha256 FROM acode_sync.migrations").fetchall()
        )
        assert recorded == PINNED["postgres"]
        # Recorded before checksums were kept (or by psql): unknown, accepted.
        conn.execute("UPDATE acode_sync.migrations SET sha256 = NULL")
        assert migrate_remote(empty_db) == []
        conn.execute(
            "UPDATE acode_sync.migrations SET sha256 = %s WHERE name = %s",
            (CHANGED, "0002_withdrawn_chat_messages"),
        )
    with pytest.raises(MigrationChanged) as caught:
        migrate_remote(empty_db)
    assert caught.value.exit_code == EXIT_USAGE
    message = str(caught.value)
    assert "\n" not in message
    assert "server migration 0002_withdrawn_chat_messages" in message


def test_migrate_remote_says_it_in_one_line_and_exits_2(empty_db: str, tmp_path: Path) -> None:
    migrate_remote(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(
            "UPDATE acode_sync.migrations SET sha256 = %s WHERE name = '0001_server_schema'",
            (CHANGED,),
        )
    env = {**os.environ, "ACODE_SYNC_REMOTE_URL": empty_db}
    subprocess.run(
        [sys.executable, "-m", "acode_sync", "init", "--workspace", str(tmp_path)],
        env=env,
        capture_output=True,
        check=True,
    )
    done = subprocess.run(
        [sys.executable, "-m", "acode_sync", "migrate", "--remote", "--workspace", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    gist = "server migration 0001_server_schema was applied from a file with sha256 000000000000"
    assert gist in line


def test_the_runner_records_checksums_and_refuses_a_changed_local_file(tmp_path: Path) -> None:
    conn = connect(tmp_path / "w.db")
    migrate_local(conn)
    recorded = dict(conn.execute("SELECT name, sha256 FROM sync_migration_checksums").fetchall())
    assert recorded == PINNED["sqlite"]
    conn.execute("DELETE FROM sync_migration_checksums WHERE name = '0001_local_schema'")
    assert migrate_local(conn) == []  # unknown: accepted
    conn.execute(
        "UPDATE sync_migration_checksums SET sha256 = ? WHERE name = '0003_edges'", (CHANGED,)
    )
    with pytest.raises(MigrationChanged, match="local migration 0003_edges"):
        migrate_local(conn)
    conn.close()
