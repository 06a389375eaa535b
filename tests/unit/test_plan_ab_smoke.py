"""The interleaved planning benchmark still runs: tiny sizes, both sides."""

from __future__ import annotations

from tests.benchmarks_loader import load_benchmark


def test_plan_ab_runs_with_tiny_sizes() -> None:
    bench = load_benchmark("plan_ab")
    report = bench.run("HEAD", rows=60, batches=[50, 10], rounds=2, calls=2)
    assert report["rounds"] == 2
    assert set(report["batches"]) == {"50", "10"}
    for entry in report["batches"].values():
        for side in ("reference", "current"):
            low, high = entry[side]["range_ms"]
            assert 0 < low <= entry[side]["median_ms"] <= high
        assert entry["current_over_reference"]["median"] > 0
