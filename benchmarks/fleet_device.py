"""One device of the fleet benchmark, in its own process: a workspace of its
own, writing messages at a set rate and running the real sync cycle
(``SyncEngine.sync_once``: its own connection each cycle, as ``run`` does)
whenever a batch's worth is waiting; every ``push()`` and ``pull()`` page it
sends is timed. Afterwards it syncs until the whole fleet has pushed, pulls
once more and reports what it holds, for the convergence check.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

from acode_sync import download, remote, store, upload
from acode_sync.engine import SyncEngine
from acode_sync.workspace import Workspace


@dataclass
class DeviceResult:
    name: str
    owner: str
    written: int = 0
    applied: int = 0
    push_ms: list[float] = field(default_factory=list)
    push_items: list[int] = field(default_factory=list)
    pull_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    digest: str = ""
    rows: int = 0
    cpu_s: float = 0.0  # this process's CPU while the fleet writes


def _timed(result: DeviceResult) -> None:
    """Wrap the two calls that reach the server, in this process only."""
    push, pull = remote.push_batch, remote.pull_page

    def timed_push(conn: Any, batch_id: str, device: str, items_json: str) -> Any:
        t0 = time.perf_counter()
        out = push(conn, batch_id, device, items_json)
        result.push_ms.append((time.perf_counter() - t0) * 1000)
        result.push_items.append(len(out.results))
        return out

    def timed_pull(conn: Any, after: int, limit: int, device: str | None) -> Any:
        t0 = time.perf_counter()
        out = pull(conn, after, limit, device)
        result.pull_ms.append((time.perf_counter() - t0) * 1000)
        return out

    upload.push_batch = timed_push  # type: ignore[assignment,attr-defined]  # timing wrappers
    download.pull_page = timed_pull  # type: ignore[assignment,attr-defined]  # timing wrappers


def digest(workspace: Workspace) -> tuple[str, int]:
    """What a device holds: every chat and message with its version and text."""
    conn = workspace.connect()
    try:
        rows = conn.execute(
            "SELECT 'c' || id, title, version FROM chats "
            "UNION ALL SELECT 'm' || id, content, version FROM messages ORDER BY 1"
        ).fetchall()
    finally:
        conn.close()
    plain = [tuple(r) for r in rows]
    return hashlib.sha256(repr(plain).encode()).hexdigest(), len(plain)


def _sync(engine: SyncEngine, result: DeviceResult) -> int:
    try:
        report = engine.sync_once(ignore_backoff=True)
    except Exception as exc:  # the benchmark counts every failure
        result.errors.append(f"{type(exc).__name__}: {exc}")
        return 0
    result.errors.extend(report.push.errors)
    if report.incomplete:
        result.errors.append("cycle incomplete")
    result.applied += report.push.applied
    return int(report.pull.received)


def run_device(
    folder: Path,
    name: str,
    owner: str,
    rate: float,
    seconds: float,
    batch: int,
    start: Barrier,
    pushed: Barrier,
    results: Any,
) -> None:
    result = DeviceResult(name, owner)
    waits = [start, pushed]  # barriers still to pass: a failed device passes them too
    try:
        _timed(result)
        workspace = Workspace(folder)
        engine = SyncEngine(workspace, workspace.config())
        conn = workspace.connect()
        chat = store.new_chat(conn, f"{name} chat")
        waits.pop(0).wait(120)
        began, cpu = time.monotonic(), time.process_time()
        pending = 0
        while (now := time.monotonic()) < began + seconds:
            due = int((now - began) * rate) - result.written
            for _ in range(max(0, due)):
                store.add_message(conn, chat, f"{name} message {result.written}")
                result.written += 1
                pending += 1
            if pending >= batch:
                _sync(engine, result)
                pending = 0
            time.sleep(0.02)
        result.cpu_s = time.process_time() - cpu
        conn.close()
        for _ in range(5):  # push what is left
            _sync(engine, result)
            if not _left(workspace):
                break
        waits.pop(0).wait(300)
        while _sync(engine, result):  # pull until nothing comes
            pass
        result.digest, result.rows = digest(workspace)
    except Exception:
        result.errors.append(traceback.format_exc(limit=3))
        for barrier in waits:  # the others wait for this one: let them go on
            with contextlib.suppress(Exception):  # broken already: nothing to wait for
                barrier.wait(300)
    results.put(result)


def _left(workspace: Workspace) -> int:
    conn = workspace.connect()
    try:
        row = conn.execute(
            "SELECT count(*) FROM sync_outbox WHERE status IN ('Pending', 'Failed')"
        ).fetchone()
        return int(row[0])
    finally:
        conn.close()


__all__ = ["DeviceResult", "Event", "digest", "run_device"]
