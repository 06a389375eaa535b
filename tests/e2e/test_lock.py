"""Two real processes on one workspace: the one that waits says who holds the
lock at once, gives up with exit 1 and an ACODE-SYNC code, and a killed holder
never leaves the lock behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fix_sync import Device

HOLDER = """\
import sys
from acode_sync.engine import SyncEngine
from acode_sync.workspace import Workspace

engine = SyncEngine(Workspace(__import__("pathlib").Path(sys.argv[1])))
with engine.lock():
    print("held", flush=True)
    sys.stdin.read()  # until the test closes our stdin (or kills us)
"""


@pytest.fixture
def holder(tmp_path: Path, alice: Device) -> Iterator[subprocess.Popen[str]]:
    """A real process holding the workspace lock through the engine's own lock()."""
    script = tmp_path / "hold_the_lock.py"
    script.write_text(HOLDER)
    with subprocess.Popen(
        [sys.executable, str(script), str(alice.workspace.root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:  # closes the pipes and waits on the way out
        assert process.stdout is not None
        assert process.stdout.readline() == "held\n"
        yield process
        if process.poll() is None:
            process.kill()


def sync_command(alice: Device, *args: str) -> list[str]:
    return [sys.executable, "-m", "acode_sync", *args, "--workspace", str(alice.workspace.root)]


def env(alice: Device, wait: str) -> dict[str, str]:
    return {
        **os.environ,
        "ACODE_SYNC_REMOTE_URL": alice.url,
        "ACODE_SYNC_LOCK_WAIT_SECONDS": wait,
    }


def test_a_second_now_says_who_holds_the_lock_and_gives_up_with_exit_1(
    alice: Device, holder: subprocess.Popen[str]
) -> None:
    result = subprocess.run(
        sync_command(alice, "now"),
        env=env(alice, "0.5"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("Waiting up to 0.5s for the workspace lock ")
    assert f"held by pid {holder.pid} (hold_the_lock.py " in lines[0]
    assert len(lines) == 2, result.stderr
    assert lines[1].startswith("Error: ACODE-SYNC-002: workspace busy: pid ")
    assert str(holder.pid) in lines[1]
    assert "Traceback" not in result.stderr
    assert "Syncing..." not in result.stdout


def test_the_waiting_line_comes_before_the_lock_is_free(
    alice: Device, holder: subprocess.Popen[str]
) -> None:
    with subprocess.Popen(
        sync_command(alice, "now"),
        env=env(alice, "600"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as waiter:
        assert waiter.stderr is not None
        first = waiter.stderr.readline()  # while the holder still holds it
        assert f"held by pid {holder.pid}" in first
        assert holder.poll() is None
        assert holder.stdin is not None
        holder.stdin.close()  # the holder finishes ...
        out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err  # ... and the waiter syncs
    assert "Sync complete." in out


def test_a_killed_holder_leaves_no_lock_behind(
    alice: Device, holder: subprocess.Popen[str]
) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    result = subprocess.run(
        sync_command(alice, "now"),
        env=env(alice, "0"),  # no waiting at all: the lock must be free now
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Waiting" not in result.stderr
    assert "Sync complete." in result.stdout
