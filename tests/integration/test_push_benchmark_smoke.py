"""The push benchmark still runs: tiny sizes against the test server, result
structure, its correctness checks, and its scratch database gone afterwards."""

from __future__ import annotations

import math
from pathlib import Path

import psycopg
import pytest

from acode_sync.upload import PushReport
from tests.benchmarks_loader import benchmark_module, load_benchmark


def test_push_benchmark_runs_with_tiny_sizes(tmp_path: Path, pg_admin_url: str) -> None:
    bench = load_benchmark("push")
    rows, repeats = 200, 3
    result = bench.run(
        rows=rows,
        repeats=repeats,
        warmup=1,
        admin_url=pg_admin_url,
        base_dir=tmp_path,
        profile=True,
        profile_rows=40,
    )

    # (a) one batch: on an empty server, then on the drained one.
    assert [b.server_before for b in result.batches] == [0, rows]
    for b in result.batches:
        assert b.batch == 50
        for side in (b.ours, b.copy):
            assert side.n == repeats
            assert 0 < side.p50_ms <= side.p99_ms <= side.max_ms

    # (b, c) every size at every batch size, each drained completely and checked.
    assert result.small_rows == rows // 10
    assert [(d.rows, d.batch_size) for d in result.drains] == [
        (rows // 10, 50),
        (rows // 10, 1000),
        (rows, 50),
        (rows, 1000),
    ]
    for d in result.drains:
        assert d.applied == d.rows + 1
        assert d.batches == math.ceil((d.rows + 1) / d.batch_size)
        assert d.batch_bytes_max == (16 * 1_048_576 if d.batch_size == 1000 else 1_048_576)
        assert d.seconds > 0 and d.rows_per_s > 0
        assert len(d.copy_seconds) == 3 and d.copy_ratio > 0
        assert len(d.floor_seconds) == 3 and d.floor_ratio > 0 and d.floor_copy_ratio > 0
        assert 0 < d.round_trips_s <= d.seconds
        assert 0 < d.rss_ready_kb <= d.rss_peak_kb
        assert d.server_push_calls is None or d.server_push_calls == d.batches

    assert [(p.rows, p.batch_size) for p in result.profiles] == [(40, 50), (40, 1000)]
    for p in result.profiles:
        assert p.top and {label for label, _ in p.phases}
        assert dict(p.phases)["waiting for the round trip (not overlapped)"] > 0

    report = bench.to_markdown(result, "python benchmarks/push.py --rows 200")
    for needle in ("(a) One batch", "(b) Draining", "(c) peak RSS", "Against the targets"):
        assert needle in report
    assert f"| {rows:,} | 1,000 |" in report

    # The scratch database is dropped and the temporary directory removed.
    with psycopg.connect(pg_admin_url) as conn:
        left = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (result.database,)
        ).fetchone()
    assert left is None
    assert list(tmp_path.iterdir()) == []


def test_the_correctness_checks_fail_loudly(tmp_path: Path) -> None:
    backlog = benchmark_module("_push_backlog")
    conn, chat_id = backlog.open_local(tmp_path / "w.db")
    try:
        backlog.write_messages(conn, chat_id, 3)
        with pytest.raises(AssertionError, match="local outbox"):
            backlog.check_local_all_synced(conn, 3)
    finally:
        conn.close()
    with pytest.raises(AssertionError, match="unexpected push report"):
        backlog.check_report(PushReport(applied=2, rejected=1), 3, "drain")
