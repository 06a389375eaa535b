"""A workspace this user cannot write: reading commands work, writing ones say
it is read-only (not corrupt) in one line and exit 2.

Root ignores file permissions, so as root the commands run as ``nobody``
(setpriv) on a copy owned by root: a directory and a file that genuinely
refuse writes. A control proves the setup: the way every command opened the
database before (a read-write open and the WAL pragma) fails there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from acode_sync.cli import acode
from acode_sync.workspace import AGENT_DIR, DB_NAME

AS_OTHER_USER = (
    ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if os.geteuid() == 0 else []
)


@pytest.fixture(scope="module")
def code_reachable_by_other_user() -> Iterator[None]:
    """``nobody`` must reach this venv and this checkout: a checkout made in a
    ``mktemp -d`` directory (0700) is not, and the commands would fail to import
    before they ever met the workspace. Every ancestor that others cannot
    traverse gets o+x (traverse only, no listing) for this module, then back."""
    import acode_sync

    changed: list[tuple[Path, int]] = []
    if AS_OTHER_USER:
        for start in (Path(sys.prefix), Path(acode_sync.__file__).resolve().parent):
            for directory in (start, *start.parents):
                mode = directory.stat().st_mode
                if not mode & 0o001 and directory not in (d for d, _ in changed):
                    changed.append((directory, mode))
                    directory.chmod(mode | 0o001)
    try:
        yield
    finally:
        for directory, mode in reversed(changed):
            directory.chmod(mode & 0o7777)


@pytest.fixture
def read_only_root(code_reachable_by_other_user: None) -> Iterator[Path]:
    """A workspace with a chat and a message, copied where ``nobody`` can read
    it but not write it: .agent/ 0555 and its files 0444."""
    base = Path(tempfile.mkdtemp(prefix="acode-ro-", dir="/tmp"))
    try:
        base.chmod(0o755)
        root = base / "ws"
        root.mkdir()
        runner = CliRunner()
        assert runner.invoke(acode, ["sync", "init", "--workspace", str(root)]).exit_code == 0
        chat = runner.invoke(acode, ["chat", "new", "Read me", "--workspace", str(root)])
        chat_id = chat.output.strip()
        runner.invoke(acode, ["chat", "add", chat_id, "hello there", "--workspace", str(root)])
        agent = root / AGENT_DIR
        leftovers = sorted(p.name for p in agent.iterdir() if p.name.endswith(("-wal", "-shm")))
        assert leftovers == []  # every connection closed: a plain WAL file, nothing else
        for path in agent.iterdir():
            path.chmod(0o444) if path.is_file() else path.chmod(0o555)
        agent.chmod(0o555)
        root.chmod(0o555)
        yield root
    finally:
        for path in [base, *base.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(base)


def as_other_user(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AS_OTHER_USER, sys.executable, *args],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(root), "ACODE_WORKSPACE": str(root)},
        check=False,
    )


def acode_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return as_other_user(root, "-c", "from acode_sync.cli import acode_main; acode_main()", *args)


def test_the_setup_really_refuses_writes(read_only_root: Path) -> None:
    db = read_only_root / AGENT_DIR / DB_NAME
    touch = as_other_user(read_only_root, "-c", f"open({str(db.parent / 'x')!r}, 'w')")
    assert touch.returncode != 0 and "Permission denied" in touch.stderr
    # The old open (read-write, then the WAL pragma): it cannot even read here.
    old = as_other_user(
        read_only_root,
        "-c",
        "import sqlite3; c = sqlite3.connect("
        f"{str(db)!r}); c.execute('PRAGMA journal_mode = WAL'); "
        "print(c.execute('SELECT count(*) FROM chats').fetchone())",
    )
    assert old.returncode != 0
    assert "readonly" in old.stderr or "unable to open" in old.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("sync", "status"),
        ("sync", "status", "--json"),
        ("sync", "queue"),
        ("sync", "queue", "--errors"),
        ("sync", "conflicts"),
        ("sync", "metrics"),
        ("chat", "list"),
    ],
)
def test_reading_commands_work(read_only_root: Path, args: tuple[str, ...]) -> None:
    result = acode_cli(read_only_root, *args)
    assert result.returncode == 0, result.stderr
    assert "Error" not in result.stderr


def test_chat_list_and_show_read_the_data(read_only_root: Path) -> None:
    listed = acode_cli(read_only_root, "chat", "list")
    assert listed.returncode == 0, listed.stderr
    assert "Read me" in listed.stdout
    chat_id = listed.stdout.splitlines()[1].split()[0]
    shown = acode_cli(read_only_root, "chat", "show", chat_id)
    assert shown.returncode == 0, shown.stderr
    assert "hello there" in shown.stdout
    queue = acode_cli(read_only_root, "sync", "queue")
    assert "Pending Upload: 2 items" in queue.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("chat", "new", "x"),
        ("sync", "pause"),
        ("sync", "now"),
        ("sync", "retry"),
        ("sync", "conflicts", "--all"),
    ],
)
def test_writing_commands_say_read_only_in_one_line_and_exit_2(
    read_only_root: Path, args: tuple[str, ...]
) -> None:
    db = read_only_root / AGENT_DIR / DB_NAME
    before = db.read_bytes()
    result = acode_cli(read_only_root, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "read-only" in lines[0]
    assert "not a usable" not in lines[0] and "corrupt" not in lines[0]
    assert db.read_bytes() == before
