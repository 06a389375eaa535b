"""`now` as a real process: a progress bar on a terminal (a pseudo-terminal
here), none in a pipe, and Ctrl-C mid-drain stopping after the batch in
flight with what was done and what remains, exit 1."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from acode_sync import store
from acode_sync.workspace import write
from tests.fix_sync import Device, make_device


def small_batches(alice: Device, chats: int, batch_size: int) -> None:
    config = alice.workspace.config_path
    config.write_text(config.read_text().replace("batch_size: 50", f"batch_size: {batch_size}"))
    conn = alice.db()
    with write(conn):
        conn.executemany(
            "INSERT INTO chats (id, title, privacy) VALUES (?, ?, 'FULL')",
            [(f"chat-{i:06d}", f"chat {i}") for i in range(chats)],
        )
    conn.close()


def command(alice: Device, *args: str) -> list[str]:
    return [sys.executable, "-m", "acode_sync", *args, "--workspace", str(alice.workspace.root)]


def env(alice: Device) -> dict[str, str]:
    return {**os.environ, "ACODE_SYNC_REMOTE_URL": alice.url}


def read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def on_terminal(alice: Device, *args: str) -> tuple[int, str, str]:
    """Run the command with standard error on a pseudo-terminal: its exit code,
    what the terminal received, and standard output (a pipe)."""
    master, slave = pty.openpty()
    with subprocess.Popen(
        command(alice, *args),
        env=env(alice),
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
    ) as process:
        os.close(slave)
        terminal = read_all(master).decode("utf-8")
        out, _ = process.communicate(timeout=300)
    os.close(master)
    return process.returncode, terminal, out


def test_now_draws_a_bar_on_a_terminal_and_prints_the_summary_last(
    alice: Device, tmp_path: Path
) -> None:
    # Another device's chats wait on the server: there is something to download
    # (this device's own pushes are not fetched back).
    desktop = make_device(tmp_path, "desktop", alice.url)
    conn = desktop.db()
    for i in range(40):
        store.new_chat(conn, f"from the desktop {i}")
    conn.close()
    desktop.sync()
    small_batches(alice, 300, 20)
    returncode, terminal, out = on_terminal(alice, "now")
    assert returncode == 0, terminal
    assert "↑ Uploading  [" in terminal
    assert "↓ Downloading  [" in terminal  # the total: the server's head minus the cursor
    assert "/300" in terminal
    assert "\x1b[K" in terminal  # the bar's line is wiped before the summary
    assert out.splitlines()[0] == "Syncing..."
    assert out.splitlines()[1] == "  ↑ Uploaded: 300 items"
    assert out.splitlines()[-1] == "Sync complete."


def test_with_verbose_log_lines_and_the_bar_keep_lines_of_their_own(alice: Device) -> None:
    small_batches(alice, 300, 20)
    returncode, terminal, _ = on_terminal(alice, "now", "-v")
    assert returncode == 0, terminal
    # What the terminal shows: each \r\x1b[K wipes the line before it.
    shown = [line.split("\r\x1b[K")[-1] for line in terminal.replace("\r\n", "\n").split("\n")]
    logged = [line for line in shown if "acode-sync: DEBUG: " in line]
    assert any("upload: " in line and " done" in line for line in logged), terminal
    # Every log line starts a line of its own: no bar drawn in front of it.
    assert all(line.startswith("acode-sync: DEBUG: ") for line in logged), logged
    # The bar was drawn again after a log line, below it.
    after_log = terminal.split("acode-sync: DEBUG: upload: ", 1)[1]
    assert "↑ Uploading  [" in after_log


def test_no_bar_when_stderr_is_not_a_terminal(alice: Device) -> None:
    small_batches(alice, 100, 20)
    done = subprocess.run(
        command(alice, "now"), env=env(alice), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines() == [
        "Syncing...",
        "  ↑ Uploaded: 100 items",
        "  ↓ Downloaded: 0 items",
        "Sync complete.",
    ]
    quiet = subprocess.run(
        command(alice, "once"), env=env(alice), capture_output=True, text=True, check=False
    )
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_ctrl_c_mid_drain_stops_after_the_batch_and_says_what_remains(
    alice: Device, server: Any
) -> None:
    small_batches(alice, 3000, 5)
    with subprocess.Popen(
        # -v: a log line per batch tells the test that the drain is under way.
        command(alice, "now", "-v"),
        env=env(alice),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stderr is not None
        for line in process.stderr:
            if "upload: " in line and "done" in line:
                break
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=300)
    assert process.returncode == 1, err
    assert "Aborted!" not in err and "Traceback" not in err
    assert "Stopping after the batch in flight" in err
    assert "Interrupted (the batch in flight finished)." in err
    conn = alice.db()
    left = conn.execute(
        "SELECT count(*) FROM sync_outbox WHERE status IN ('Pending', 'Failed')"
    ).fetchone()[0]
    synced = conn.execute("SELECT count(*) FROM sync_outbox WHERE status = 'Synced'").fetchone()[0]
    conn.close()
    assert 0 < left < 3000
    assert synced + left == 3000
    assert f"{left} items remain in the queue" in err
    assert f"  ↑ Uploaded: {synced} items;" in err
    on_server = server.execute("SELECT count(*) FROM acode_sync.chats").fetchone()[0]
    assert on_server == synced  # nothing half done: every sent batch was marked
    assert out.startswith("Syncing...")
