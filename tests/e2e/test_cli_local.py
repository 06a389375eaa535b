"""The local commands as a user runs them: init, chat, queue, and refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner
from ulid import ULID

from acode_sync.cli import sync
from acode_sync.cli.chat import chat
from acode_sync.workspace import Workspace
from tests.fix_local import Cli


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real console entry point in a child process (no in-process shortcuts)."""
    return subprocess.run(
        [sys.executable, "-m", "acode_sync", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "ACODE_WORKSPACE": ""},
        check=False,
    )


def test_init_creates_config_database_and_device_id_idempotently(tmp_path: Path) -> None:
    first = run("init", "--remote", "postgresql://me@example/db", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    config = (tmp_path / ".agent" / "config.yml").read_text()
    assert "url: postgresql://me@example/db" in config
    device = Workspace(tmp_path).config().device_id
    assert device is not None
    ULID.from_str(device)
    second = run("init", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "(kept)" in second.stdout
    assert "up to date" in second.stdout
    assert (tmp_path / ".agent" / "config.yml").read_text() == config


def test_chat_commands_and_queue(cli: Cli) -> None:
    made = cli.acode("chat", "new", "Feature: Auth")
    assert made.exit_code == 0, made.output
    chat_id = made.output.strip()
    added = cli.acode("chat", "add", chat_id, "-", "--role", "assistant", input="from stdin\n")
    assert added.exit_code == 0, added.output
    assert cli.acode("chat", "rename", chat_id, "Auth v2").exit_code == 0
    shown = cli.acode("chat", "show", chat_id)
    assert "Chat: " in shown.output and '"Auth v2"' in shown.output
    assert "from stdin" in shown.output
    listed = cli.acode("chat", "list")
    assert "Auth v2" in listed.output

    queue = cli.sync("queue")
    assert queue.exit_code == 0, queue.output
    lines = queue.output.splitlines()
    assert lines[0] == "Sync Queue"
    assert lines[1] == "─" * 36
    assert lines[2] == "Pending Upload: 3 items"
    assert lines[4].split() == ["Item", "Status", "Retries", "Last", "Error"]
    assert lines[5].split() == [chat_id, "(chat)", "Pending", "0", "-"]
    assert lines[6].split()[1:] == ["(msg)", "Pending", "0", "-"]

    as_json = json.loads(cli.acode("sync", "queue", "--json").output)
    assert (as_json["total"], as_json["pending"], as_json["shown"]) == (3, 3, 3)
    assert as_json["by_type"]["Pending"] == {"chat": 2, "message": 1}
    items = as_json["items"]
    assert [item["entity_type"] for item in items] == ["chat", "message", "chat"]
    assert all(item["status"] == "Pending" for item in items)


def test_privacy_and_delete_commands(cli: Cli) -> None:
    chat_id = cli.acode("chat", "new", "t").output.strip()
    assert cli.acode("chat", "privacy", chat_id, "local_only").exit_code == 0
    assert cli.acode("chat", "delete", chat_id).exit_code == 0
    listed = cli.acode("chat", "list", "--all")
    assert "LOCAL_ONLY" in listed.output and "(deleted)" in listed.output
    bad = cli.acode("chat", "privacy", chat_id, "SECRET")
    assert bad.exit_code == 2
    missing = cli.acode("chat", "rename", "nope", "x")
    assert missing.exit_code == 2
    assert "no chat with id nope" in missing.output


def test_bad_config_is_one_line_exit_2_and_changes_nothing(cli: Cli) -> None:
    config = cli.workspace.config_path
    config.write_text("sync:\n  upload:\n    batch_size: fifty\n")
    db_before = cli.workspace.db_path.read_bytes()
    result = run("init", "--workspace", str(cli.workspace.root), cwd=cli.workspace.root)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "config.yml: sync.upload.batch_size: must be a whole number" in result.stderr
    assert "Traceback" not in result.stderr
    assert config.read_text() == "sync:\n  upload:\n    batch_size: fifty\n"
    assert cli.workspace.db_path.read_bytes() == db_before


def test_missing_workspace_is_one_line_exit_2(tmp_path: Path) -> None:
    result = run("queue", cwd=tmp_path)
    assert result.returncode == 2
    assert "no .agent/" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert not (tmp_path / ".agent").exists()


def test_non_sqlite_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / ".agent").mkdir()
    db = tmp_path / ".agent" / "workspace.db"
    db.write_text("these are my notes, not a database\n")
    for args in (("queue",), ("init",)):
        result = run(*args, cwd=tmp_path)
        assert result.returncode == 2, result
        assert "not an SQLite database" in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().count("\n") == 0
    assert db.read_text() == "these are my notes, not a database\n"
    assert not (tmp_path / ".agent" / "config.yml").exists()


def test_every_command_has_help_and_is_in_the_manual() -> None:
    manual = (Path(__file__).parents[2] / "docs" / "MANUAL.md").read_text()
    runner = CliRunner()
    for group, prefix in ((sync, ""), (chat, "acode chat ")):
        ctx = click.Context(group)
        names = group.list_commands(ctx)
        assert len(names) >= 7
        for name in names:
            command = group.get_command(ctx, name)
            assert command is not None, name
            result = runner.invoke(group, [name, "--help"])
            assert result.exit_code == 0, name
            assert command.help, f"{name} has no help text"
            assert (
                f"`{prefix}{name}" in manual or f"| `{name}" in manual or (f"`{name} " in manual)
            ), f"{name} is not in docs/MANUAL.md"
