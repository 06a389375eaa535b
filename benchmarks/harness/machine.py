"""The machine and the code a benchmark measured: reported with every result,
because the development machine is shared and the tree moves under us."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg

import acode_sync
from acode_sync.migrations import shipped

MEMORY_FILESYSTEMS = {"tmpfs", "ramfs", "devtmpfs"}
SERVER_SETTINGS = ("autovacuum", "synchronous_commit", "fsync", "shared_buffers", "jit")


@dataclass(frozen=True)
class Machine:
    date: str
    nproc: int
    python: str
    sqlite: str
    platform: str
    load_at_start: str  # 1/5/15-minute load averages: how busy the shared machine was
    code: str  # the commit measured, and whether acode_sync/ or sql/ differ from it
    db_dir: str | None = None  # where the local database files were
    filesystem: str | None = None
    postgres: str | None = None  # server version, when a server was used
    server_settings: str | None = None  # the settings that shape the numbers
    psycopg: str | None = None


def describe_machine(*, db_dir: Path | None = None, admin_url: str | None = None) -> Machine:
    return Machine(
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        nproc=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0,
        python=platform.python_version(),
        sqlite=sqlite3.sqlite_version,
        platform=platform.platform(),
        load_at_start=load_average(),
        code=code_version(),
        db_dir=None if db_dir is None else str(db_dir),
        filesystem=None if db_dir is None else filesystem_of(db_dir),
        postgres=None if admin_url is None else server_version(admin_url),
        server_settings=None if admin_url is None else server_settings(admin_url),
        psycopg=None if admin_url is None else psycopg.__version__,
    )


def machine_lines(m: Machine, *, load_at_end: str | None = None) -> list[str]:
    """The report's first lines: when, on what, which code, how busy."""
    server = f"PostgreSQL {m.postgres} (127.0.0.1, same host), " if m.postgres else ""
    client = f", psycopg {m.psycopg}" if m.psycopg else ""
    lines = [
        f"- date: {m.date}",
        f"- machine: nproc={m.nproc}, Python {m.python}, {server}SQLite {m.sqlite}{client}, "
        f"{m.platform}",
        f"- code: {m.code}",
    ]
    if m.server_settings:
        lines.append(f"- server settings: {m.server_settings}")
    end = f"; at end: {load_at_end}" if load_at_end is not None else ""
    lines.append(f"- load average (1/5/15 min) at start: {m.load_at_start}{end}")
    return lines


def load_average() -> str:
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def code_version() -> str:
    """The commit measured, whether acode_sync/ or sql/ differ from it, and a hash
    of the shipped SQL (read-only git commands; 'unknown' outside a checkout).
    The code is the ``acode_sync`` imported (PYTHONPATH may name another tree
    than the benchmark's own); where it is not the benchmark's checkout, its
    folder is named too."""
    root = Path(acode_sync.__file__).resolve().parents[1]
    elsewhere = root != Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(root), *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise OSError(done.stderr.strip())
        return done.stdout.strip()

    text = "".join(m.sql for side in ("postgres", "sqlite") for m in shipped(side))
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    try:
        head = git("log", "-1", "--format=%h %ad", "--date=format:%Y-%m-%d %H:%M")
        dirty = git("status", "--porcelain", "--", "acode_sync", "sql")
    except OSError:
        head, dirty = "unknown", ""
    state = " + uncommitted changes in acode_sync/ or sql/" if dirty else ""
    where = f" (acode_sync from {root})" if elsewhere else ""
    return f"{head}{state}{where}; shipped SQL sha256 {digest}"


def filesystem_of(path: Path) -> str:
    """The filesystem type that holds ``path`` (Linux /proc/self/mounts), or 'unknown'."""
    target = str(path.resolve())
    best, kind = "", "unknown"
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and len(point) > len(best):
                    best, kind = point, fields[2]
    except OSError:
        pass
    return kind


def server_version(admin_url: str) -> str:
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def server_settings(admin_url: str) -> str:
    with psycopg.connect(admin_url) as conn:
        found: dict[str, str] = dict(
            conn.execute(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
                (list(SERVER_SETTINGS),),
            ).fetchall()
        )
    return ", ".join(f"{name}={found.get(name, '?')}" for name in SERVER_SETTINGS)
