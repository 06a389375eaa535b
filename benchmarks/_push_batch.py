"""(a) One batch: ``Uploader.push(max_batches=1)`` of 50 fresh messages beside a
raw COPY of the same rows, in the same loop, order alternating."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
from _push_backlog import (
    BYTES_MAX,
    DEVICE_ID,
    LATENCY_BATCH,
    check_local_all_synced,
    check_report,
    copy_source,
    open_local,
    server_counts,
    sync_config,
    write_messages,
)
from _push_results import BatchResult
from harness import DEVICE_ROLE, Latency, copy_rows, progress, reset_server, with_params

from acode_sync.engine import connect_remote
from acode_sync.upload import Uploader


def push_one_batch(uploader: Uploader, remote: psycopg.Connection[Any], index: int) -> float:
    """Seconds for ``push(max_batches=1)`` of the 50 rows just written."""
    start = time.perf_counter()
    report = uploader.push(remote, max_batches=1)
    elapsed = time.perf_counter() - start
    check_report(report, LATENCY_BATCH, f"batch {index}")
    if report.batches != 1:
        raise AssertionError(f"batch {index}: {report.batches} batches, want 1")
    return elapsed


def run_batch_latency(
    folder: Path, db_url: str, *, repeats: int, warmup: int, fresh: bool, quiet: bool
) -> BatchResult:
    """``push(max_batches=1)`` of 50 fresh messages vs a COPY of the same rows.

    ``fresh``: on an emptied server; otherwise on the server as the previous
    phase left it (a drained backlog of this owner, and as many rows in the
    baseline table), with a new chat."""
    device_url = with_params(db_url, user=DEVICE_ROLE)
    if fresh:
        reset_server(db_url)
    before = server_counts(db_url)
    local, chat_id = open_local(folder / f"batch-{'fresh' if fresh else 'loaded'}.db")
    uploader = Uploader(
        local,
        sync_config(LATENCY_BATCH, BYTES_MAX[LATENCY_BATCH]),
        DEVICE_ID,
        conflicts_dir=folder / "conflicts",
    )
    ours: list[float] = []
    copies: list[float] = []
    try:
        with connect_remote(device_url) as remote, connect_remote(device_url) as copy_conn:
            check_report(uploader.push(remote), 1, "the chat")
            for index in range(warmup + repeats):
                ids = write_messages(local, chat_id, LATENCY_BATCH)
                rows = copy_source(local, ids)
                if index % 2 == 0:
                    ours_s = push_one_batch(uploader, remote, index)
                    copy_s = copy_rows(copy_conn, rows)
                else:
                    copy_s = copy_rows(copy_conn, rows)
                    ours_s = push_one_batch(uploader, remote, index)
                if index >= warmup:
                    ours.append(ours_s)
                    copies.append(copy_s)
        total = (warmup + repeats) * LATENCY_BATCH
        check_local_all_synced(local, total)
    finally:
        local.close()
    after = server_counts(db_url)
    grown = {key: after[key] - before[key] for key in after}
    want = {
        "messages": total,
        "chats": 1,
        "changes": total + 1,
        "distinct_keys": total + 1,
        "conflicts": 0,
        "copied": total,
    }
    if grown != want:
        raise AssertionError(f"batch latency: the server grew by {grown}, want {want}")
    progress(
        f"  one batch of {LATENCY_BATCH}, server holding {before['messages']:,} messages: "
        f"{repeats} repeats done",
        quiet,
    )
    return BatchResult(
        batch=LATENCY_BATCH,
        ours=Latency.of_seconds(ours),
        copy=Latency.of_seconds(copies),
        server_before=before["messages"],
    )
