"""The pull benchmark still runs: tiny sizes, its own scratch database, the
result structure and the correctness checks it makes."""

from __future__ import annotations

from pathlib import Path

import psycopg

from tests.benchmarks_loader import benchmark_module, load_benchmark

ROWS = 300


def test_pull_benchmark_runs_with_tiny_sizes(tmp_path: Path, pg_admin_url: str) -> None:
    bench = load_benchmark("pull")
    result = bench.run(
        rows=ROWS,
        page_size=100,
        detect_page=50,
        detect_open=200,
        detect_repeats=2,
        single_repeats=3,
        resolve_items=20,
        winner_calls=200,
        push_batch_size=50,
        push_repeats=2,
        admin_url=pg_admin_url,
        base_dir=tmp_path,
        profile=True,
        profile_top=5,
    )

    # (1) pull and apply: everything arrived, once, applied, and nothing echoed.
    pull = result.pull
    assert pull is not None
    assert (pull.rows, pull.changes, pull.page_size, pull.pages) == (ROWS, ROWS + 1, 100, 4)
    assert (pull.local_messages, pull.local_chats) == (ROWS, 1)
    assert pull.inbox == {"Applied": ROWS + 1}
    assert pull.cursor == pull.last_seq == ROWS + 1
    assert pull.outbox_rows == 0 and pull.rows_equal
    assert len(pull.fetch_page_ms) == 4 and len(pull.baseline_s) == 2
    assert 0 < pull.fetch_s < pull.seconds and 0 < pull.apply_s < pull.seconds
    assert pull.rows_per_s > 0 and pull.baseline_rows_per_s > 0 and pull.ratio > 0

    # (2) detection at pull: pages of 50 and of 1, with 0 and 200 open rows.
    shapes = {(d.page, d.open_rows): d for d in result.detection}
    assert set(shapes) == {(50, 0), (50, 200), (1, 0), (1, 200)}
    for (page, _), d in shapes.items():
        assert len(d.apply_ns) == (2 if page == 50 else 3)
        assert len(d.detect_ns) == len(d.apply_ns) * benchmark_module("_pull_detect").DETECT_TIMINGS
        assert 0 < d.detect_us_per_item <= d.detect_max_us_per_item
    resolve = result.resolve
    assert resolve is not None
    assert resolve.conflicts == resolve.files == 20
    assert (resolve.local_wins, resolve.remote_wins) == (10, 10)
    assert result.winner is not None and result.winner.us_per_call > 0

    # (3) detection at push: every stale item was logged as a conflict on the server.
    push = result.push_check
    assert push is not None
    assert push.batch == 50 and len(push.applied_s) == len(push.stale_s) == 2
    assert push.conflicts_logged == 3 * 50

    assert result.profile is not None and result.profile.top

    report = bench.to_markdown(result, "python benchmarks/pull.py --rows 300")
    assert "Against the targets" in report and "| pull + apply (ours)" in report

    # Nothing is left behind: the temporary directory and the scratch database.
    assert list(tmp_path.iterdir()) == []
    with psycopg.connect(pg_admin_url) as admin:
        left = admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (result.database,)
        ).fetchone()
    assert left is None
