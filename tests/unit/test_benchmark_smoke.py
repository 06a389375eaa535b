"""The outbox-write benchmark still runs: tiny N, temp dir, result structure."""

from __future__ import annotations

from pathlib import Path

from tests.benchmarks_loader import load_benchmark


def test_benchmark_runs_with_a_small_n(tmp_path: Path) -> None:
    bench = load_benchmark("outbox_write")
    n = 50
    result = bench.run(n=n, warmup=5, block=20, bulk_rows=n, base_dir=tmp_path)

    assert set(result.modes) == {"NORMAL", "FULL"}
    for mode in result.modes.values():
        assert mode.captured.n == n and mode.baseline.n == n
        assert 0 < mode.captured.p50_ms <= mode.captured.p99_ms <= mode.captured.max_ms
        assert 0 < mode.baseline.p50_ms <= mode.baseline.p99_ms <= mode.baseline.max_ms
        assert mode.captured_outbox_rows == 5 + n
        assert mode.baseline_outbox_rows == 0

    assert set(result.bulk) == {"NORMAL", "FULL"}
    for bulk in result.bulk.values():
        assert bulk.rows == n
        assert bulk.outbox_rows == n
        assert bulk.distinct_keys == n

    report = bench.to_markdown(result)
    assert "| NORMAL |" in report and "| FULL |" in report
    # The temp directory is cleaned up after the run.
    assert list(tmp_path.iterdir()) == []


def test_percentile_is_nearest_rank() -> None:
    bench = load_benchmark("outbox_write")
    ordered = list(range(1, 101))
    assert bench.percentile(ordered, 50) == 50
    assert bench.percentile(ordered, 99) == 99
    assert bench.percentile([7], 99) == 7
