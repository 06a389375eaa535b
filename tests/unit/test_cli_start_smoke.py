"""The CLI start-up benchmark still runs: one round, a tiny queue."""

from __future__ import annotations

import pytest

from tests.benchmarks_loader import load_benchmark


def test_cli_start_benchmark_runs_with_one_round(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_benchmark("cli_start")
    assert bench.main(["--runs", "1", "--queue-rows", "50", "--queue-runs", "1", "--quiet"]) == 0
    report = capsys.readouterr().out
    for label in ("python -c pass", "acode chat add", "acode-sync status", "acode-sync queue"):
        assert f"| `{label}` |" in report
    assert "Queue of 50 open outbox rows" in report
    assert "| `floor: sqlite3 shell, count(*) of the open rows` |" in report
