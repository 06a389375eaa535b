"""The report of benchmarks/now.py: its tables and the verdicts against
issue 9's targets."""

from __future__ import annotations

from typing import TYPE_CHECKING

import writer
from harness import verdict

if TYPE_CHECKING:
    from now import NowBenchResult

TARGET_FLOOR_RATIO_1000 = 0.6
TARGET_ROWS_PER_S_50 = 5000.0
TARGET_SIZE_RATIO = 1.5
TARGET_WRITER_P99_MS = 50.0
TARGET_WRITER_MAX_MS = 200.0


def _writer_row(label: str, stats: writer.WriterStats | None) -> str:
    if stats is None:
        return f"| {label} | - | - | - | - | - |"
    return (
        f"| {label} | {stats.n:,} | {stats.p50_ms:.1f} | {stats.p99_ms:.1f} | "
        f"{stats.max_ms:.1f} | {stats.errors} |"
    )


def to_markdown(result: NowBenchResult, command: str) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        f"- date: {result.date}; load at start: {result.load_at_start}; "
        f"total {result.elapsed_s:.0f} s",
        f"- code: {result.code}",
        "",
        "| rows | batch | `now` s | rows/s | floor rows/s | ratio to floor | COPY rows/s "
        "| push() alone rows/s | its ratio to floor |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in result.runs:
        lines.append(
            f"| {r.rows:,} | {r.batch_size:,} | {r.seconds:.2f} | {r.rows_per_s:,.0f} | "
            f"{r.floor_rows_per_s:,.0f} | {r.floor_ratio:.2f} | {r.rows / r.copy_s:,.0f} | "
            f"{r.rows / r.push_only_s:,.0f} | {r.push_only_ratio:.2f} |"
        )
    big, small = result.runs[0], result.runs[1]
    mb = 1024 * 1024
    if len(big.ratios) > 1:
        lines += [
            "",
            f"Batch 1,000: {len(big.ratios)} drains, each beside its own floor; the row above "
            "is the one of median ratio. Each ratio, in order: "
            + ", ".join(f"{ratio:.2f}" for ratio in big.ratios)
            + ".",
        ]
    lines += [
        "",
        "| workspace file + WAL after the sync | data-only copy | ratio | after pruning |",
        "|--:|--:|--:|--:|",
        f"| {big.file_bytes / mb:.1f} MiB (WAL {big.wal_bytes / mb:.1f}) | "
        f"{big.data_only_bytes / mb:.1f} MiB | {big.file_bytes / big.data_only_bytes:.2f}x | "
        f"{big.pruned_bytes / mb:.1f} MiB (WAL {big.pruned_wal_bytes / mb:.1f}) |",
        "",
        f"A new device pulling the {big.rows:,} changes (`now`): {big.pull_seconds:.2f} s, "
        f"{big.rows / big.pull_seconds:,.0f} rows/s (with the writer on a file of its own: "
        f"{big.pull_other_seconds:.2f} s).",
        "",
        "| concurrent writer, ms per transaction | n | p50 | p99 | max | errors |",
        "|---|--:|--:|--:|--:|--:|",
        _writer_row("alone (baseline: nothing else writes)", big.writer_idle),
        _writer_row(f"while `now` drains {big.rows:,} at batch 1,000", big.writer_drain),
        _writer_row(f"while a new device pulls {big.rows:,}", big.writer_pull),
        _writer_row(
            "on a file of its own while a new device pulls (floor: the disk and cores shared)",
            big.writer_other,
        ),
        "",
        "Against the targets:",
        "",
        f"- batch 1,000, ratio to the floor{' (median)' if len(big.ratios) > 1 else ''}: "
        f"{verdict(big.floor_ratio, TARGET_FLOOR_RATIO_1000, '', at_least=True)} "
        f"(the server's push() alone: {big.push_only_ratio:.2f})",
        f"- batch 50 ({small.rows:,} rows): "
        f"{verdict(small.rows_per_s, TARGET_ROWS_PER_S_50, ' rows/s', at_least=True, digits=0)}",
        f"- file / data-only: "
        f"{verdict(big.file_bytes / big.data_only_bytes, TARGET_SIZE_RATIO, 'x')}; "
        f"after pruning {'smaller' if big.pruned_bytes < big.file_bytes else '**not smaller**'}",
    ]
    for label, stats in (("drain", big.writer_drain), ("new-device pull", big.writer_pull)):
        if stats is not None:
            lines.append(
                f"- writer during the {label}: p99 "
                f"{verdict(stats.p99_ms, TARGET_WRITER_P99_MS, ' ms', digits=1)}, max "
                f"{verdict(stats.max_ms, TARGET_WRITER_MAX_MS, ' ms', digits=1)}"
            )
    if big.writer_other is not None:
        lines.append(
            f"- floor of the writer during a pull (a file of its own): p99 "
            f"{big.writer_other.p99_ms:.1f} ms, max {big.writer_other.max_ms:.1f} ms"
        )
    return "\n".join(lines) + "\n"
