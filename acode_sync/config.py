"""Load and validate ``.agent/config.yml``.

The file is read with ``yaml.safe_load`` (and the document kept beside it
while the text is unchanged: :mod:`acode_sync.config_cache`). Unknown keys
are warned about (a typo should not stop sync, but should not pass silently
either); a wrong type or value is a :class:`ConfigError` naming the file, the
key and the reason.
``ACODE_SYNC_REMOTE_URL`` overrides ``sync.remote.url``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acode_sync.config_cache import cached_document, store_document
from acode_sync.errors import ConfigError

log = logging.getLogger(__name__)

REMOTE_URL_ENV = "ACODE_SYNC_REMOTE_URL"
POLICIES = ("last_write_wins", "local_wins", "remote_wins")


@dataclass(frozen=True)
class UploadConfig:
    poll_interval_seconds: float = 5
    batch_size: int = 50
    batch_bytes_max: int = 1_048_576
    # One item above this is Failed (ACODE-SYNC-005), not sent: CouchDB's default
    # document limit, far above any message and far below what would make a
    # single round trip time out.
    item_bytes_max: int = 8_000_000


@dataclass(frozen=True)
class RetryConfig:
    max_attempts: int = 5
    base_delay_seconds: float = 1
    max_delay_seconds: float = 300


@dataclass(frozen=True)
class DownloadConfig:
    poll_interval_seconds: float = 30
    page_size: int = 1000


@dataclass(frozen=True)
class FollowConfig:
    """Write-following (issue 11): the embedded engine's fast, cheap checks.

    Off by default: then the upload poll paces the engine (with one probe of
    the server's head per poll, so a pull waits at most an upload poll). On,
    a local commit is noticed within ``local_check_seconds`` (``PRAGMA
    data_version`` on a dedicated connection) and pushed at once, and other
    devices' changes within ``head_check_seconds`` (one index probe of the
    server's change log; a pull only when its head moved). The poll intervals
    stay upper bounds either way.
    """

    enabled: bool = False
    local_check_seconds: float = 0.1
    head_check_seconds: float = 0.5


@dataclass(frozen=True)
class ConflictConfig:
    policy: str = "last_write_wins"
    preserve_original: bool = True


@dataclass(frozen=True)
class RetentionConfig:
    # Synced outbox rows and applied inbox rows older than this are pruned.
    days: float = 7


@dataclass(frozen=True)
class SyncConfig:
    enabled: bool = True
    device_id: str | None = None
    remote_url: str | None = None
    # Where remote_url came from, for messages that tell the user what to fix.
    remote_url_from: str = field(default="sync.remote.url", compare=False)
    upload: UploadConfig = field(default_factory=UploadConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    conflict: ConflictConfig = field(default_factory=ConflictConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    follow: FollowConfig = field(default_factory=FollowConfig)


Check = Callable[[Any], str | None]


def _positive_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be a whole number, got {value!r}"
    return None if value > 0 else f"must be greater than 0, got {value}"


def _positive_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, got {value!r}"
    return None if value > 0 else f"must be greater than 0, got {value}"


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false, got {value!r}"


def _optional_text(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value.strip()):
        return None
    return f"must be a non-empty string, got {value!r}"


def _policy(value: Any) -> str | None:
    if value in POLICIES:
        return None
    return f"must be one of {', '.join(POLICIES)}, got {value!r}"


# Every key under `sync:` with its check; the defaults are the dataclasses'.
_KEYS: dict[str, Check] = {
    "enabled": _boolean,
    "device_id": _optional_text,
    "remote.url": _optional_text,
    "upload.poll_interval_seconds": _positive_number,
    "upload.batch_size": _positive_int,
    "upload.batch_bytes_max": _positive_int,
    "upload.item_bytes_max": _positive_int,
    "retry.max_attempts": _positive_int,
    "retry.base_delay_seconds": _positive_number,
    "retry.max_delay_seconds": _positive_number,
    "download.poll_interval_seconds": _positive_number,
    "download.page_size": _positive_int,
    "conflict.policy": _policy,
    "conflict.preserve_original": _boolean,
    "retention.days": _positive_number,
    "follow.enabled": _boolean,
    "follow.local_check_seconds": _positive_number,
    "follow.head_check_seconds": _positive_number,
}
_SECTIONS = {key.split(".")[0] for key in _KEYS if "." in key}


def _flatten(section: Mapping[str, Any], path: str, where: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in section.items():
        dotted = f"{path}.{key}"
        name = dotted.removeprefix("sync.")
        if isinstance(value, dict):
            if name not in _SECTIONS:
                log.warning("%s: %s: unknown key, ignored", where, dotted)
                continue
            flat.update(_flatten(value, dotted, where))
        elif name in _SECTIONS:
            raise ConfigError(where, dotted, f"must be a mapping, got {value!r}")
        elif name not in _KEYS:
            log.warning("%s: %s: unknown key, ignored", where, dotted)
        else:
            flat[name] = value
    return flat


def parse_config(document: Any, where: str) -> SyncConfig:
    """Validate a parsed YAML document and build the configuration."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(where, "(top level)", "must be a mapping with a 'sync:' key")
    for key in document:
        if key != "sync":
            log.warning("%s: %s: unknown key, ignored", where, key)
    section = document.get("sync") or {}
    if not isinstance(section, dict):
        raise ConfigError(where, "sync", f"must be a mapping, got {section!r}")
    flat = _flatten(section, "sync", where)
    for name, value in flat.items():
        problem = _KEYS[name](value)
        if problem:
            raise ConfigError(where, f"sync.{name}", problem)

    def pick(cls: type[Any], prefix: str) -> Any:
        fields = {
            name.removeprefix(prefix + "."): value
            for name, value in flat.items()
            if name.startswith(prefix + ".")
        }
        return cls(**fields)

    retry = pick(RetryConfig, "retry")
    if retry.base_delay_seconds > retry.max_delay_seconds:
        raise ConfigError(
            where, "sync.retry.base_delay_seconds", "must not exceed retry.max_delay_seconds"
        )
    return SyncConfig(
        enabled=flat.get("enabled", True),
        device_id=flat.get("device_id"),
        remote_url=flat.get("remote.url"),
        remote_url_from=f"sync.remote.url in {where}",
        upload=pick(UploadConfig, "upload"),
        retry=retry,
        download=pick(DownloadConfig, "download"),
        conflict=pick(ConflictConfig, "conflict"),
        retention=pick(RetentionConfig, "retention"),
        follow=pick(FollowConfig, "follow"),
    )


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> SyncConfig:
    """Read ``path`` (absent means all defaults) and apply the environment override."""
    environ = os.environ if environ is None else environ
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise ConfigError(where, "(file)", exc.strerror or str(exc)) from None
    config = parse_config(_document(path, text, where), where)
    override = environ.get(REMOTE_URL_ENV)
    if override:
        config = SyncConfig(
            **{**config.__dict__, "remote_url": override, "remote_url_from": REMOTE_URL_ENV}
        )
    return config


def _document(path: Path, text: str, where: str) -> Any:
    """The YAML document of ``text``: from the cache while the text is unchanged."""
    found, document = cached_document(path, text)
    if found:
        return document
    import yaml  # here, not at import: most commands find the document cached

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}" if mark is not None else "(file)"
        raise ConfigError(where, at, f"not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if text:
        store_document(path, text, document)
    return document


def default_config_text(device_id: str, remote_url: str | None) -> str:
    """The config file `init` writes: every key with its default, and the device id."""
    url = remote_url if remote_url else "null  # or set ACODE_SYNC_REMOTE_URL"
    return f"""\
# acode-sync configuration. Every key is shown with its default.
sync:
  enabled: true
  device_id: {device_id}

  # Remote connection (postgresql://role@host:port/db). Passwords: in the URL,
  # PGPASSWORD or ~/.pgpass; they are never printed.
  remote:
    url: {url}

  # Upload settings
  upload:
    poll_interval_seconds: 5
    batch_size: 50
    batch_bytes_max: 1048576  # 1MB
    item_bytes_max: 8000000   # a larger item is Failed (ACODE-SYNC-005), not sent

  # Retry settings
  retry:
    max_attempts: 5
    base_delay_seconds: 1
    max_delay_seconds: 300

  # Download settings
  download:
    poll_interval_seconds: 30
    page_size: 1000

  # Conflict resolution
  conflict:
    policy: last_write_wins  # or 'local_wins', 'remote_wins'
    preserve_original: true

  # Synced outbox rows and applied inbox rows are pruned after this many days
  retention:
    days: 7

  # Write-following for an embedded engine (SyncEngine.start): push a local
  # commit within local_check_seconds, pull another device's change within
  # head_check_seconds (a one-row probe of the server's log). The poll
  # intervals above stay upper bounds.
  follow:
    enabled: false
    local_check_seconds: 0.1
    head_check_seconds: 0.5
"""


def add_device_id(text: str, device_id: str, where: str) -> str:
    """``text`` with ``sync.device_id`` set to ``device_id``, edited as text.

    PyYAML does not keep comments, so the key is written into the user's file
    line by line: the null value replaced, or a line added right under
    ``sync:`` (a ``sync:`` section appended when there is none). Everything
    else stays byte for byte. The result is parsed again and must mean the
    same configuration plus the device id; a layout this cannot edit safely
    (flow style, say) is a ConfigError that says what to add by hand.
    """
    import yaml

    document = yaml.safe_load(text)
    before = parse_config(document, where)
    lines = text.splitlines(keepends=True)
    null_key = re.compile(r"^(\s+device_id:)\s*(?:null|~)?\s*(#.*)?$")
    section = re.compile(r"^sync:\s*(#.*)?$")
    edited: list[str] | None = None
    for number, line in enumerate(lines):
        found = null_key.match(line.rstrip("\r\n"))
        if found:
            comment = f"  {found.group(2)}" if found.group(2) else ""
            edited = [
                *lines[:number],
                f"{found.group(1)} {device_id}{comment}\n",
                *lines[number + 1 :],
            ]
            break
    if edited is None:
        for number, line in enumerate(lines):
            if section.match(line.rstrip("\r\n")):
                indent = _child_indent(lines[number + 1 :])
                edited = [
                    *lines[: number + 1],
                    f"{indent}device_id: {device_id}\n",
                    *lines[number + 1 :],
                ]
                break
    if edited is None and not (isinstance(document, dict) and "sync" in document):
        tail = "" if not text or text.endswith("\n") else "\n"
        edited = [text, tail, f"sync:\n  device_id: {device_id}\n"]
    try:
        # A second sync: key would parse (the last one wins): never append one.
        after = None if edited is None else parse_config(yaml.safe_load("".join(edited)), where)
    except (yaml.YAMLError, ConfigError):
        after = None
    if edited is None or after != SyncConfig(**{**before.__dict__, "device_id": device_id}):
        raise ConfigError(
            where,
            "sync.device_id",
            f"missing, and this file's layout cannot be edited "
            f"safely; add 'device_id: {device_id}' under 'sync:' by hand",
        )
    return "".join(edited)


def _child_indent(lines: list[str]) -> str:
    """The indentation of the first key under a section (two spaces if none)."""
    for line in lines:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            indent = line[: len(line) - len(line.lstrip())]
            return indent or "  "
    return "  "
