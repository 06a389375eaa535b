"""The CLI answers at once and shows its work (issue 10), on a local workspace:
what a command imports, -v/-q wherever they stand, --version, the queue's
summary and limits, conflicts --ack by id, tables by display width."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from wcwidth import wcswidth

from acode_sync import __version__, store
from acode_sync.config_cache import cache_path
from acode_sync.workspace import Workspace, write
from tests.fix_local import Cli

HEAVY = ("psycopg", "prometheus_client", "sqlite_utils")

LOADED = """\
import sys
from acode_sync.cli import acode
try:
    acode(sys.argv[1:], prog_name="acode", standalone_mode=False)
finally:
    print(" ".join(sorted(sys.modules)), file=sys.stderr)
"""
# What `acode chat add` (every message) does without: the config's YAML, the
# tables, logging (nothing logs at the default level), the read side's
# classes, and the package-data and checksum machinery of the migrations
# (a workspace at the latest migration reads no migration file).
NOT_FOR_ADD = (
    "dataclasses",
    "hashlib",
    "importlib.metadata",
    "importlib.resources",
    "json",
    "logging",
    "tabulate",
    "wcwidth",
    "yaml",
    "acode_sync.config",
    "acode_sync.records",
)


def loaded_after(*args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", LOADED, *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(done.stderr.splitlines()[-1].split())


def modules_after(*args: str) -> set[str]:
    return {name.split(".")[0] for name in loaded_after(*args)}


def test_import_and_chat_add_load_no_driver_and_no_metrics(workspace: Workspace) -> None:
    conn = workspace.connect()
    chat = store.new_chat(conn, "t")
    conn.close()
    root = str(workspace.root)
    assert set(HEAVY) & modules_after("--help") == set()
    assert set(HEAVY) & modules_after("chat", "add", chat, "hello", "--workspace", root) == set()
    assert set(HEAVY) & modules_after("sync", "queue", "--workspace", root) == set()
    # status reads the figures, not the metrics library
    assert set(HEAVY) & modules_after("sync", "status", "--workspace", root) == set()


def test_chat_add_loads_only_what_it_uses_and_an_ascii_queue_no_table_library(
    workspace: Workspace,
) -> None:
    conn = workspace.connect()
    chat = store.new_chat(conn, "t")
    conn.close()
    root = str(workspace.root)
    assert set(NOT_FOR_ADD) & loaded_after("chat", "add", chat, "hi", "--workspace", root) == set()
    # With -v it logs (and so loads logging).
    assert "logging" in loaded_after("chat", "add", chat, "hi", "-v", "--workspace", root)
    # The first command to read the config parses its YAML and keeps the
    # document (config_cache); the next ones start without PyYAML.
    cache_path(workspace.config_path).unlink(missing_ok=True)
    assert "yaml" in loaded_after("sync", "queue", "--workspace", root)
    queue = loaded_after("sync", "queue", "--workspace", root)
    assert {"tabulate", "wcwidth", "yaml"} & queue == set()
    assert "yaml" not in loaded_after("sync", "status", "--workspace", root)
    assert "tabulate" in loaded_after("chat", "new", "日本語", "--workspace", root) | (
        loaded_after("chat", "list", "--workspace", root)
    )


def entry(program: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    code = f"from acode_sync.cli import {program}_main; {program}_main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "ACODE_WORKSPACE": ""},
        check=False,
    )


@pytest.mark.parametrize(
    ("program", "args"),
    [
        ("acode", ["-v", "sync", "status"]),
        ("acode", ["sync", "-v", "status"]),
        ("acode", ["sync", "status", "-v"]),
        ("acode", ["--verbose", "chat", "list"]),
        ("acode", ["chat", "-v", "list"]),
        ("acode", ["chat", "list", "-v"]),
        ("sync", ["-v", "queue"]),
        ("sync", ["queue", "--verbose"]),
    ],
)
def test_verbose_anywhere_logs_to_stderr(
    workspace: Workspace, program: str, args: list[str]
) -> None:
    done = entry(program, *args, cwd=workspace.root)
    assert done.returncode == 0, done.stderr
    assert "acode-sync: DEBUG: workspace " in done.stderr
    assert "DEBUG" not in done.stdout


def test_without_verbose_or_with_quiet_no_debug_lines(workspace: Workspace) -> None:
    (workspace.config_path).write_text(
        workspace.config_path.read_text() + "\nunknown_top_level: 1\n"
    )
    plain = entry("acode", "sync", "status", cwd=workspace.root)
    assert plain.returncode == 0, plain.stderr
    assert "DEBUG" not in plain.stderr
    assert "WARNING" in plain.stderr  # the unknown key
    for args in (
        ["-q", "sync", "status"],
        ["sync", "status", "-q"],
        ["-v", "sync", "status", "-q"],
    ):
        quiet = entry("acode", *args, cwd=workspace.root)
        assert quiet.returncode == 0, quiet.stderr
        assert quiet.stderr == ""  # the last of -v/-q wins


def test_version_on_both_programs(tmp_path: Path) -> None:
    for program, name in (("acode", "acode"), ("sync", "acode-sync")):
        done = entry(program, "--version", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"{name}, version {__version__}"


def fill_queue(workspace: Workspace, chats: int) -> None:
    conn = workspace.connect()
    with write(conn):
        conn.executemany(
            "INSERT INTO chats (id, title, privacy) VALUES (?, ?, 'FULL')",
            [(f"chat-{i:06d}", f"chat {i}") for i in range(chats)],
        )
    conn.close()


def test_a_large_queue_prints_a_summary_and_a_bounded_table(cli: Cli) -> None:
    fill_queue(cli.workspace, 3000)
    shown = cli.sync("queue")
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[2] == "Pending Upload: 3000 items"
    assert len(lines) < 40
    rows = [line for line in lines if line.startswith("chat-")]
    assert len(rows) == 20
    assert "... and 2980 more (--limit N shows N, --all shows every item)" in lines
    assert any(line.startswith("By type: 3000 chat; oldest ") for line in lines)

    limited = cli.sync("queue", "--limit", "5").output.splitlines()
    assert len([line for line in limited if line.startswith("chat-")]) == 5
    every = cli.sync("queue", "--all").output.splitlines()
    assert len([line for line in every if line.startswith("chat-")]) == 3000

    data = json.loads(cli.sync("queue", "--json").output)
    assert (data["total"], data["pending"], data["shown"], data["limit"]) == (3000, 3000, 20, 20)
    assert data["by_type"]["Pending"] == {"chat": 3000}
    assert len(data["items"]) == 20
    assert len(json.loads(cli.sync("queue", "--json", "--all").output)["items"]) == 3000


def add_conflict(workspace: Workspace, entity_id: str) -> None:
    conn = workspace.connect()
    with write(conn):
        conn.execute(
            "INSERT INTO sync_conflicts (entity_type, entity_id, detected_by, policy, winner, "
            "local_version, local_payload, remote_version, remote_payload) "
            "VALUES ('chat', ?, 'pull', 'last_write_wins', 'remote', 1, ?, 2, ?)",
            (entity_id, json.dumps({"title": "mine"}), json.dumps({"title": "theirs"})),
        )
    conn.close()


def test_conflicts_ack_takes_the_entity_id_or_number_and_history_marks_them(cli: Cli) -> None:
    for entity in ("chat-a", "chat-b", "chat-c"):
        add_conflict(cli.workspace, entity)
    listed = cli.sync("conflicts").output
    assert "3 conflicts found" in listed and '"theirs"  [#2]' in listed
    by_id = cli.sync("conflicts", "--ack", "chat-b")
    assert by_id.exit_code == 0, by_id.output
    assert by_id.output == "Acknowledged 1 conflict.\n"
    assert cli.sync("conflicts", "--ack", "#3").output == "Acknowledged 1 conflict.\n"
    assert cli.sync("conflicts", "--ack", "1").output == "Acknowledged 1 conflict.\n"
    again = cli.sync("conflicts", "--ack", "chat-b")
    assert again.exit_code == 2
    assert "no unacknowledged conflict of chat-b" in again.output
    assert cli.sync("conflicts", "--ack", "#9").exit_code == 2
    assert "0 conflicts found" in cli.sync("conflicts").output
    history = cli.sync("conflicts", "--history").output
    assert "3 conflicts found (3 acknowledged)" in history
    assert history.count(", acknowledged]") == 3
    assert history.count("  Acknowledged: ") == 3


def test_tables_align_by_display_width(cli: Cli) -> None:
    conn = cli.workspace.connect()
    for title in ("plain", "日本語のチャット", "emoji 🎉🎉", "mixed 中文 text"):
        store.new_chat(conn, title)
    conn.close()
    lines = cli.acode("chat", "list").output.splitlines()
    starts = set()
    for line in lines[1:]:
        cut = line.index(" 0 ")  # the Messages column
        starts.add(wcswidth(line[:cut]))
    assert len(starts) == 1, lines


def test_new_id_is_a_ulid_of_now() -> None:
    from datetime import UTC, datetime

    from ulid import ULID

    made = store.new_id()
    parsed = ULID.from_str(made)
    assert str(parsed) == made and len(made) == 26
    assert abs((parsed.datetime - datetime.now(UTC)).total_seconds()) < 60
    made_now = [store.new_id() for _ in range(1000)]
    assert len(set(made_now)) == 1000
    assert made_now == sorted(made_now)  # monotonic, as python-ulid's are
