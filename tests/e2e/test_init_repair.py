"""``init`` on an existing workspace fills in a missing device id and says so,
leaving every other byte of the user's file (comments included) alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from ulid import ULID

from acode_sync.cli import sync
from acode_sync.workspace import Workspace

USER_FILE = """\
# my settings -- keep this comment
sync:
  enabled: true   # on purpose
  remote:
    url: postgresql://me@db.example/acode
  upload:
    batch_size: 20  # small link
"""


def init(root: Path) -> tuple[int, str]:
    result = CliRunner().invoke(sync, ["init", "--workspace", str(root)], env={})
    return result.exit_code, result.output


@pytest.fixture
def root(tmp_path: Path) -> Path:
    assert init(tmp_path)[0] == 0
    return tmp_path


def test_a_missing_device_id_is_added_under_sync_and_nothing_else_changes(root: Path) -> None:
    config = Workspace(root).config_path
    config.write_text(USER_FILE)
    code, output = init(root)
    assert code == 0, output
    assert "(kept; added the missing sync.device_id)" in output
    text = config.read_text()
    lines = text.splitlines()
    assert lines[2].startswith("  device_id: ")
    device = lines[2].removeprefix("  device_id: ")
    ULID.from_str(device)
    assert [*lines[:2], *lines[3:]] == USER_FILE.splitlines()
    assert f"Device: {device}" in output
    loaded = Workspace(root).config()
    assert (loaded.upload.batch_size, loaded.remote_url) == (20, "postgresql://me@db.example/acode")
    again = init(root)
    assert "(kept)" in again[1] and config.read_text() == text


def test_a_null_device_id_is_filled_in_place_keeping_its_comment(root: Path) -> None:
    config = Workspace(root).config_path
    config.write_text("sync:\n  device_id: null  # set by init\n  enabled: true\n")
    code, output = init(root)
    assert code == 0, output
    first, second, third = config.read_text().splitlines()
    assert first == "sync:" and third == "  enabled: true"
    assert second.startswith("  device_id: ") and second.endswith("  # set by init")
    assert Workspace(root).config().device_id


def test_a_file_without_a_sync_section_gets_one(root: Path) -> None:
    config = Workspace(root).config_path
    config.write_text("# nothing here yet\n")
    code, output = init(root)
    assert code == 0, output
    text = config.read_text()
    assert text.startswith("# nothing here yet\nsync:\n  device_id: ")
    assert Workspace(root).config().device_id


def test_a_layout_it_cannot_edit_safely_is_refused_with_the_line_to_add(root: Path) -> None:
    config = Workspace(root).config_path
    config.write_text("sync: {enabled: true}\n")
    code, output = init(root)
    assert code == 2
    assert "add 'device_id: " in output and "by hand" in output
    assert config.read_text() == "sync: {enabled: true}\n"
