"""The lag benchmark (benchmarks/lag.py) still runs: a short stream, two idle devices."""

from __future__ import annotations

from pathlib import Path

from tests.benchmarks_loader import load_benchmark
from tests.fix_pg import PgDatabase


def test_lag_benchmark_runs_quickly(tmp_path: Path, pg: PgDatabase) -> None:
    bench = load_benchmark("lag")
    out = tmp_path / "lag.md"
    args = ["--seconds", "1", "--rate", "20", "--idle-devices", "2", "--idle-seconds", "1"]
    assert bench.main([*args, "--admin-url", pg.admin_url, "--out", str(out), "--quiet"]) == 0
    report = out.read_text()
    assert "| default settings | 20 |" in report
    assert "| write-following on | 20 |" in report
    assert "transactions/s" in report
