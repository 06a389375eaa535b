"""Config: the Contract's defaults, warnings for unknown keys, errors for bad values."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest

from acode_sync.config import (
    REMOTE_URL_ENV,
    SyncConfig,
    default_config_text,
    load_config,
    parse_config,
)
from acode_sync.config_cache import cache_path
from acode_sync.errors import ConfigError


def test_absent_file_gives_the_contract_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path / "missing.yml", environ={})
    assert config.enabled is True
    assert config.remote_url is None
    assert config.upload.poll_interval_seconds == 5
    assert config.upload.batch_size == 50
    assert config.upload.batch_bytes_max == 1_048_576
    assert config.retry.max_attempts == 5
    assert config.retry.base_delay_seconds == 1
    assert config.retry.max_delay_seconds == 300
    assert config.download.poll_interval_seconds == 30
    assert config.conflict.policy == "last_write_wins"
    assert config.conflict.preserve_original is True


def test_written_default_file_parses_to_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text(default_config_text("DEVICE1", "postgresql://u@h/db"))
    config = load_config(path, environ={})
    assert config == SyncConfig(device_id="DEVICE1", remote_url="postgresql://u@h/db")


def test_values_are_read(tmp_path: Path) -> None:
    config = parse_config(
        {"sync": {"upload": {"batch_size": 7}, "conflict": {"policy": "remote_wins"}}}, "f"
    )
    assert config.upload.batch_size == 7
    assert config.upload.batch_bytes_max == 1_048_576
    assert config.conflict.policy == "remote_wins"


def test_environment_overrides_remote_url(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("sync:\n  remote:\n    url: postgresql://file@h/db\n")
    config = load_config(path, environ={REMOTE_URL_ENV: "postgresql://env@h/db"})
    assert config.remote_url == "postgresql://env@h/db"


def test_unknown_keys_are_warned_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="acode_sync"):
        config = parse_config({"sync": {"upload": {"batch_sise": 3}, "colour": "red"}}, "f.yml")
    assert config.upload.batch_size == 50
    assert "sync.upload.batch_sise: unknown key" in caplog.text
    assert "sync.colour: unknown key" in caplog.text


@pytest.mark.parametrize(
    ("document", "key", "reason"),
    [
        ({"sync": {"upload": {"batch_size": "fifty"}}}, "sync.upload.batch_size", "whole number"),
        ({"sync": {"upload": {"batch_size": 0}}}, "sync.upload.batch_size", "greater than 0"),
        ({"sync": {"upload": {"batch_size": True}}}, "sync.upload.batch_size", "whole number"),
        ({"sync": {"enabled": "yes"}}, "sync.enabled", "true or false"),
        ({"sync": {"conflict": {"policy": "newest"}}}, "sync.conflict.policy", "one of"),
        ({"sync": {"retry": 5}}, "sync.retry", "mapping"),
        ({"sync": ["a"]}, "sync", "mapping"),
        (["a"], "(top level)", "mapping"),
        (
            {"sync": {"retry": {"base_delay_seconds": 10, "max_delay_seconds": 5}}},
            "sync.retry.base_delay_seconds",
            "must not exceed",
        ),
    ],
)
def test_bad_values_name_file_key_and_reason(document: object, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(document, "/w/.agent/config.yml")
    assert caught.value.path == "/w/.agent/config.yml"
    assert caught.value.key == key
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"/w/.agent/config.yml: {key}: ")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("sync:\n  upload: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as caught:
        load_config(path, environ={})
    assert caught.value.key.startswith("line ")


def test_passwords_are_never_printed() -> None:
    from acode_sync.remote import redact

    shown = redact("postgresql://alice:s3cret@db.example:6543/acode")
    assert "s3cret" not in shown
    assert shown == "postgresql://alice@db.example:6543/acode"
    assert "hunter2" not in redact("host=h user=u password=hunter2 dbname=d")


def test_follow_keys_default_off_and_are_validated() -> None:
    config = parse_config(None, "c.yml")
    assert (config.follow.enabled, config.follow.local_check_seconds) == (False, 0.1)
    assert config.follow.head_check_seconds == 0.5
    on = parse_config({"sync": {"follow": {"enabled": True, "head_check_seconds": 2}}}, "c.yml")
    assert on.follow.enabled and on.follow.head_check_seconds == 2
    with pytest.raises(ConfigError, match=r"sync\.follow\.local_check_seconds"):
        parse_config({"sync": {"follow": {"local_check_seconds": 0}}}, "c.yml")


def test_the_parsed_document_is_kept_and_used_only_for_the_same_text(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("sync:\n  device_id: ONE\n  upload:\n    batch_size: 7\n")
    assert load_config(path, environ={}).upload.batch_size == 7
    kept = cache_path(path)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600  # it may hold a password
    assert json.loads(kept.read_text())["document"]["sync"]["device_id"] == "ONE"

    # The cache answers for the text it was made from, and only for it.
    forged = {"text": path.read_text(), "document": {"sync": {"device_id": "X"}}}
    kept.write_text(json.dumps(forged))
    assert load_config(path, environ={}).device_id == "X"
    path.write_text("sync:\n  device_id: TWO\n")
    assert load_config(path, environ={}).device_id == "TWO"
    assert json.loads(kept.read_text())["document"] == {"sync": {"device_id": "TWO"}}


@pytest.mark.parametrize("garbage", ["", "{", "[]", '{"text": 1}', "\x00\xff"])
def test_a_broken_cache_is_ignored_and_replaced(tmp_path: Path, garbage: str) -> None:
    path = tmp_path / "config.yml"
    path.write_text("sync:\n  device_id: ONE\n")
    cache_path(path).write_text(garbage)
    assert load_config(path, environ={}).device_id == "ONE"
    assert json.loads(cache_path(path).read_text())["document"] == {"sync": {"device_id": "ONE"}}


def test_a_document_json_cannot_hold_is_not_cached(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    # A YAML date, and an integer key: JSON would give back other values.
    path.write_text("sync:\n  device_id: ONE\nwhen: 2026-12-02\n1: one\n")
    assert load_config(path, environ={}).device_id == "ONE"
    assert not cache_path(path).exists()


def test_errors_are_still_reported_from_a_kept_document(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("sync:\n  upload:\n    batch_size: -1\n")
    for _ in range(2):  # parsed, then from the cache: the same error
        with pytest.raises(ConfigError, match="batch_size"):
            load_config(path, environ={})
    assert cache_path(path).exists()


def test_an_unwritable_directory_only_costs_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("sync:\n  device_id: ONE\n")
    cache_path(path).mkdir()  # cannot be replaced by a file
    assert load_config(path, environ={}).device_id == "ONE"
    assert load_config(path, environ={}).device_id == "ONE"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
