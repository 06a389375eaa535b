"""benchmarks/fleet.py runs end to end on a tiny fleet, its one-process floor
(--wire) and a tiny big server."""

from __future__ import annotations

import pytest

from tests.benchmarks_loader import load_benchmark
from tests.fix_pg import admin_url

fleet = load_benchmark("fleet")
pgbouncer = load_benchmark("pgbouncer")


def test_a_tiny_fleet_converges_directly_and_through_pgbouncer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    modes = "direct,pgbouncer"
    try:
        pgbouncer.find_pgbouncer()
    except pgbouncer.PgBouncerMissing:
        modes = "direct"
    argv = [
        "--admin-url",
        admin_url(),
        "--sizes",
        "2",
        "--seconds",
        "2",
        "--rate",
        "20",
        "--batch",
        "10",
        "--modes",
        modes,
        "--big-rows",
        "20000",
        "--big-owners",
        "10",
        "--wire",
        "--quiet",
    ]
    assert fleet.main(argv) == 0
    out = capsys.readouterr().out
    for mode in modes.split(","):
        assert f"| {mode} | 2 | 1 |" in out
    assert out.count("| 2/2 |") == len(modes.split(","))  # every device converged
    assert "| path (one driver process) |" in out  # the floor: the same calls, one process
    for mode in modes.split(","):
        assert f"| {mode} | 2 | 1 | " in out.split("one driver process")[1]
    assert "first error" not in out
    assert "big / empty p50" in out
