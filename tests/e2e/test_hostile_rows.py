"""Rows any SQLite client can write, written with the sqlite3 shell among good
ones: each bad one is isolated (Failed, ACODE-SYNC-005, the column and why),
every good one reaches the server, changes keep coming down, and the commands
that show the workspace keep working."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from acode_sync import store
from acode_sync.cli import acode, sync
from tests.fix_pg import PgDatabase
from tests.fix_sync import Device, make_device

# The sqlite3 shell is part of this machine's set-up (bin/test); missing, it fails.
SQLITE3 = shutil.which("sqlite3")


@dataclass(frozen=True)
class Hostile:
    name: str
    sql: str  # {chat} is the good chat's id
    entity_id: str  # how the bad entity's id reads back (for a bad id: its escape)
    column: str
    why: str


TEN_MB = 10_000_000

CASES = [
    Hostile(
        "content not UTF-8",
        "INSERT INTO messages (id, chat_id, role, content) "
        "VALUES ('bad-content', '{chat}', 'user', CAST(X'41FF42' AS TEXT));",
        "bad-content",
        "content",
        "not valid UTF-8 (byte 0xFF at byte 1)",
    ),
    Hostile(
        "title not UTF-8",
        "INSERT INTO chats (id, title) VALUES ('bad-title', CAST(X'C328' AS TEXT));",
        "bad-title",
        "title",
        "not valid UTF-8 (byte 0xC3 at byte 0)",
    ),
    Hostile(
        "id not UTF-8",
        "INSERT INTO messages (id, chat_id, role, content) "
        "VALUES (CAST(X'6261642DFF' AS TEXT), '{chat}', 'user', 'hello');",
        "bad-\\xFF",
        "id",
        "not valid UTF-8 (byte 0xFF at byte 4)",
    ),
    Hostile(
        "NUL in content",
        "INSERT INTO messages (id, chat_id, role, content) "
        "VALUES ('bad-nul', '{chat}', 'user', 'a' || char(0) || 'b');",
        "bad-nul",
        "content",
        "contains a NUL byte at byte 1",
    ),
    Hostile(
        "encoded lone surrogate",
        "INSERT INTO messages (id, chat_id, role, content) "
        "VALUES ('bad-cesu', '{chat}', 'user', CAST(X'78EDA080' AS TEXT));",
        "bad-cesu",
        "content",
        "not valid UTF-8 (byte 0xED at byte 1)",
    ),
    Hostile(
        "escaped lone surrogate",
        "INSERT INTO messages (id, chat_id, role, content) "
        "VALUES ('bad-escape', '{chat}', 'user', 'fine');"
        "UPDATE sync_outbox SET payload = replace(payload, '\"fine\"', '\"\\ud800\"') "
        "WHERE entity_id = 'bad-escape';",
        "bad-escape",
        "content",
        "contains a lone surrogate U+D800",
    ),
    Hostile(
        "payload JSON broken by hand",
        "INSERT INTO messages (id, chat_id, role, content) "
        "VALUES ('bad-json', '{chat}', 'user', 'fine');"
        'UPDATE sync_outbox SET payload = \'{{"id": "bad-json", broken\' '
        "WHERE entity_id = 'bad-json';",
        "bad-json",
        "payload",
        "not valid JSON",
    ),
    Hostile(
        "payload id does not match",
        "INSERT INTO messages (id, chat_id, role, content) "
        "VALUES ('bad-match', '{chat}', 'user', 'fine');"
        "UPDATE sync_outbox SET payload = json_set(payload, '$.id', 'someone-else') "
        "WHERE entity_id = 'bad-match';",
        "bad-match",
        "id",
        "the payload's id 'someone-else' differs",
    ),
    Hostile(
        "message of a missing chat",
        "INSERT INTO messages (id, chat_id, role, content) "
        "VALUES ('bad-orphan', 'no-such-chat', 'user', 'lost');",
        "bad-orphan",
        "chat_id",
        "no chat 'no-such-chat' in this workspace",
    ),
    Hostile(
        "payload stored as a BLOB",
        "INSERT INTO messages (id, chat_id, role, content) "
        "VALUES ('bad-blob', '{chat}', 'user', 'fine');"
        "UPDATE sync_outbox SET payload = CAST(payload AS BLOB) WHERE entity_id = 'bad-blob';",
        "bad-blob",
        "payload",
        "stored as a BLOB, not text",
    ),
    Hostile(
        "outbox key stored as a BLOB",
        "INSERT INTO messages (id, chat_id, role, content) "
        "VALUES ('bad-key', '{chat}', 'user', 'fine');"
        "UPDATE sync_outbox SET idempotency_key = CAST(idempotency_key AS BLOB) "
        "WHERE entity_id = 'bad-key';",
        "bad-key",
        "idempotency_key",
        "stored as a BLOB, not text",
    ),
    Hostile(
        "a 10 MB message",
        "INSERT INTO messages (id, chat_id, role, content) "
        f"VALUES ('bad-huge', '{{chat}}', 'user', hex(randomblob({TEN_MB // 2})));",
        "bad-huge",
        "payload",
        "above upload.item_bytes_max (8,000,000)",
    ),
]


def shell(device: Device, sql: str) -> None:
    """The sqlite3 shell, as any user would run it (no foreign keys, no checks of ours)."""
    assert SQLITE3 is not None, "the sqlite3 shell is needed (Debian package sqlite3)"
    subprocess.run(
        [SQLITE3, str(device.workspace.db_path)], input=sql, text=True, check=True, timeout=60
    )


class Commands:
    """The real CLI of one device, with its remote in the environment."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Result:
        group = sync if args[0] != "chat" else acode
        result = self.runner.invoke(
            group,
            [*args, "--workspace", str(self.device.workspace.root)],
            env={"ACODE_SYNC_REMOTE_URL": self.device.url},
        )
        assert "Traceback" not in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            result.exception
        )
        return result


def server_rows(pg: PgDatabase, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg.url()) as conn:
        return conn.execute(sql, args).fetchall()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_hostile_row_is_isolated_and_everything_else_flows(
    case: Hostile, tmp_path: Path, pg: PgDatabase
) -> None:
    laptop = make_device(tmp_path, "laptop", pg.device_url("alice"))
    desktop = make_device(tmp_path, "desktop", pg.device_url("alice"))
    run = Commands(laptop)
    conn = laptop.db()
    chat = store.new_chat(conn, "good chat")
    good = [store.add_message(conn, chat, f"good {n}") for n in range(25)]
    conn.close()
    shell(laptop, case.sql.format(chat=chat))
    conn = laptop.db()
    good += [store.add_message(conn, chat, f"good {n}") for n in range(25, 50)]
    conn.close()

    synced = run("now")
    assert synced.exit_code == 1, synced.output  # one item failed: sync incomplete
    assert f"{case.entity_id}: ACODE-SYNC-005" in synced.output

    on_server = {row[0] for row in server_rows(pg, "SELECT id FROM acode_sync.messages")}
    assert on_server == set(good), "every good row, and only those, reached the server"
    conn = laptop.db()
    failed = conn.execute(
        "SELECT status, next_retry_at, last_error FROM sync_outbox WHERE status = 'Failed'"
    ).fetchall()
    pending = conn.execute(
        "SELECT count(*) FROM sync_outbox WHERE status IN ('Pending', 'Failed')"
    ).fetchone()[0]
    conn.close()
    assert len(failed) == 1 and pending == 1
    _status, next_retry_at, last_error = failed[0]
    assert next_retry_at is None  # failed for good: retrying cannot help
    assert last_error.startswith(f"ACODE-SYNC-005: invalid payload: {case.column}: "), last_error
    assert case.why in last_error

    # Another device's change still comes down, and the bad row is not sent again.
    desktop.sync()
    conn = desktop.db()
    theirs = store.add_message(conn, chat, "from the desktop")
    conn.close()
    desktop.sync()
    again = run("now")
    assert again.exit_code == 0, again.output
    assert "Downloaded: 1 item" in again.output

    queue = run("queue")
    assert queue.exit_code == 0, queue.output
    assert case.entity_id in queue.output and "ACODE-SYNC-005" in queue.output
    listed = json.loads(run("queue", "--json").output)["items"]
    assert [item["status"] for item in listed] == ["Failed"]
    status_json = json.loads(run("status", "--json").output)
    assert status_json["failed"] == 1
    assert "Failed: 1" in run("status").output
    shown = run("chat", "show", chat)
    assert shown.exit_code == 0 and "from the desktop" in shown.output
    assert all(f"({message_id})" in shown.output for message_id in [*good, theirs])
    if case.entity_id.startswith("bad-") and case.column in ("content", "id"):
        assert "[Failed]" in shown.output
    assert run("chat", "list").exit_code == 0


def test_our_own_commands_refuse_what_could_never_sync(tmp_path: Path, pg: PgDatabase) -> None:
    laptop = make_device(tmp_path, "laptop", pg.device_url("alice"))
    run = Commands(laptop)
    chat = run("chat", "new", "fine").output.strip()
    nul = CliRunner().invoke(
        acode,
        ["chat", "add", chat, "-", "--workspace", str(laptop.workspace.root)],
        input=b"a\x00b",
    )
    assert nul.exit_code == 2
    assert nul.output.strip().splitlines() == [
        "Error: content: contains a NUL byte at byte 1 (PostgreSQL text cannot hold it); "
        "nothing was written"
    ]
    not_utf8 = CliRunner().invoke(
        acode,
        ["chat", "add", chat, "-", "--workspace", str(laptop.workspace.root)],
        input=b"caf\xe9",
    )
    assert not_utf8.exit_code == 2
    assert "content: not valid UTF-8 (byte 0xE9 at byte 3)" in not_utf8.output
    conn = laptop.db()
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    conn.close()


def test_a_bad_argument_byte_is_one_line_not_a_traceback(tmp_path: Path, pg: PgDatabase) -> None:
    """argv bytes that are not UTF-8 reach Python as surrogate escapes."""
    laptop = make_device(tmp_path, "laptop", pg.device_url("alice"))
    acode_bin = Path(sys.executable).with_name("acode")  # the console script of this venv
    done = subprocess.run(
        [str(acode_bin), "chat", "new", b"caf\xe9".decode("utf-8", "surrogateescape")],
        cwd=laptop.workspace.root,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.decode().strip() == (
        "Error: title: not valid UTF-8 (byte 0xE9 at byte 3); nothing was written"
    )
