"""The interleaved push benchmark still runs: tiny sizes against the test
server, both migration levels measured, its databases gone afterwards."""

from __future__ import annotations

import os

import psycopg

from tests.benchmarks_loader import load_benchmark


def test_push_interleaved_runs_with_tiny_sizes(pg_admin_url: str) -> None:
    bench = load_benchmark("push_interleaved")
    result = bench.run(batch=5, calls=4, admin_url=pg_admin_url)
    assert [(s.label, s.upto) for s in result.sides] == [
        ("reference", "0008_planned_push"),
        ("current", "0009_one_time_check_fewer"),
    ]
    for side in result.sides:
        assert len(side.push_s) == len(side.floor_s) == 4
        assert all(t > 0 for t in side.push_s + side.floor_s)
    report = bench.to_markdown(result, "python benchmarks/push_interleaved.py")
    assert "| reference (0008_planned_push) |" in report
    assert "| current (0009_one_time_check_fewer) |" in report
    with psycopg.connect(pg_admin_url) as admin:
        left = admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'acode_bench_il_%%_' || %s",
            (str(os.getpid()),),
        ).fetchall()
    assert left == []
