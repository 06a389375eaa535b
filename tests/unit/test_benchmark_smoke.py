"""The outbox-write benchmark still runs: tiny N, temp dir, result structure."""

from __future__ import annotations

from pathlib import Path

from tests.benchmarks_loader import benchmark_module, load_benchmark


def test_benchmark_runs_with_a_small_n(tmp_path: Path) -> None:
    bench = load_benchmark("outbox_write")
    n = 50
    result = bench.run(n=n, warmup=5, block=20, bulk_rows=n, repeats=2, base_dir=tmp_path)

    assert set(result.modes) == {"NORMAL", "FULL"}
    for mode in result.modes.values():
        assert set(mode.latency) == {"captured", "baseline", "floor"}
        for latency in mode.latency.values():
            assert latency.n == n
            assert 0 < latency.p50_ms <= latency.p99_ms <= latency.max_ms
        assert mode.outbox_rows == {"captured": 5 + n, "baseline": 0, "floor": 5 + n}

    assert set(result.bulk) == {"NORMAL", "FULL"}
    for bulk in result.bulk.values():
        assert bulk.rows == n
        assert bulk.outbox_rows == n
        assert bulk.distinct_keys == n
        assert all(len(times) == 2 and min(times) > 0 for times in bulk.seconds.values())

    report = bench.to_markdown(result)
    assert "| NORMAL |" in report and "| FULL |" in report
    assert report.count("- issue 9,") == 4
    # The temp directory is cleaned up after the run.
    assert list(tmp_path.iterdir()) == []


def test_percentile_is_nearest_rank() -> None:
    harness = benchmark_module("harness")
    ordered = list(range(1, 101))
    assert harness.percentile(ordered, 50) == 50
    assert harness.percentile(ordered, 99) == 99
    assert harness.percentile(ordered[:30], 99) == 30
    assert harness.percentile([7], 99) == 7


def test_latency_reads_nanoseconds_and_seconds_alike() -> None:
    harness = benchmark_module("harness")
    from_ns = harness.Latency.of_ns([3_000_000, 1_000_000, 2_000_000])
    from_s = harness.Latency.of_seconds([0.003, 0.001, 0.002])
    for latency in (from_ns, from_s):
        assert (latency.n, latency.p50_ms, latency.max_ms) == (3, 2.0, 3.0)


def test_no_benchmark_module_is_over_400_lines() -> None:
    folder = Path(__file__).resolve().parents[2] / "benchmarks"
    sizes = {
        p.relative_to(folder).as_posix(): len(p.read_text().splitlines())
        for p in folder.rglob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > 400} == {}
