"""The whole-`now` benchmark still runs: tiny sizes against the test server,
every phase checked, its scratch database and files gone afterwards."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg

from tests.benchmarks_loader import load_benchmark
from tests.fix_pg import admin_url


def test_now_benchmark_runs_with_tiny_sizes(tmp_path: Path) -> None:
    bench = load_benchmark("now")
    result = bench.run(
        rows=120,
        rows_50=60,
        admin_url=admin_url(),
        base_dir=tmp_path,
        quiet=True,
        idle_s=0.3,
        repeats=2,
    )

    assert [(r.rows, r.batch_size) for r in result.runs] == [(120, 1000), (60, 50)]
    for r in result.runs:
        assert r.seconds > 0 and r.floor_s > 0 and r.copy_s > 0 and r.floor_ratio > 0
    big = result.runs[0]
    assert len(big.ratios) == 2 and big.floor_ratio in big.ratios
    assert result.runs[1].ratios == [result.runs[1].floor_ratio]
    assert 0 < big.data_only_bytes < big.file_bytes
    assert big.pruned_bytes > 0 and big.pull_seconds > 0 and big.pull_other_seconds > 0
    for stats in (big.writer_idle, big.writer_drain, big.writer_pull, big.writer_other):
        assert stats is not None and stats.n > 0 and stats.errors == 0
        assert 0 < stats.p50_ms <= stats.p99_ms <= stats.max_ms

    report = bench.to_markdown(result, "python benchmarks/now.py --quick")
    for needle in (
        "ratio to floor",
        "2 drains, each beside its own floor",
        "data-only copy",
        "concurrent writer",
        "a file of its own",
        "Against the targets",
    ):
        assert needle in report

    with psycopg.connect(admin_url()) as conn:
        name = f"acode_bench_now_{os.getpid()}"
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        assert left.fetchone() is None
    assert list(tmp_path.iterdir()) == []
