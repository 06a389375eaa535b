"""What a push benchmark found, phase by phase, and its Markdown report
against the targets."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from _push_backlog import DRAIN_BATCHES, LATENCY_BATCH
from harness import (
    DEVICE_ROLE,
    FLOOR_BATCH,
    Latency,
    Machine,
    ProfileEntry,
    machine_lines,
    profile_lines,
    verdict,
)

# Targets the results are compared against.
SPEC_TYPICAL_MS = 2000.0  # specification: one batch of 50, typical
SPEC_MAX_MS = 5000.0  # specification: one batch of 50, max
TARGET_BATCH_MS = 50.0  # ours: one batch of 50 (held against p99)

TARGET_ROWS_PER_S_50 = 5000.0  # ours: drain rate at batch_size 50

TARGET_COPY_RATIO_1000 = 0.5  # ours: drain rate at batch_size 1000 / COPY rate
TARGET_RSS_MB = 150.0  # ours: peak RSS of the draining process


@dataclass(frozen=True)
class BatchResult:
    batch: int
    ours: Latency
    copy: Latency
    server_before: int  # messages of this owner already on the server at the start

    @property
    def ratio_p50(self) -> float:
        return self.ours.p50_ms / self.copy.p50_ms


@dataclass(frozen=True)
class DrainResult:
    rows: int  # messages in the backlog (the outbox holds rows + 1: the chat)
    batch_size: int
    batch_bytes_max: int
    seconds: float
    batches: int
    applied: int
    rss_ready_kb: int  # peak RSS after imports and connections, before draining
    rss_peak_kb: int  # peak RSS after the drain
    server_push_ms: float | None  # total time inside acode_sync.push()
    server_log_ms: float | None  # of which in the change-log trigger function
    server_push_calls: int | None
    round_trips_s: float  # client-side wall time inside push_batch (network + server)
    first_batches_ms: float  # mean round trip of the first tenth of the batches
    last_batches_ms: float  # ... and of the last tenth (the final partial batch left out)
    copy_seconds: tuple[float, ...]  # the raw COPY samples of this backlog size
    floor_seconds: tuple[float, ...]  # the bare-INSERT floor samples (see timed_floor)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    @property
    def copy_median_s(self) -> float:
        return statistics.median(self.copy_seconds)

    @property
    def copy_rows_per_s(self) -> float:
        return self.rows / self.copy_median_s

    @property
    def copy_ratio(self) -> float:
        """Our rate as a fraction of the raw COPY rate."""
        return self.rows_per_s / self.copy_rows_per_s

    @property
    def floor_median_s(self) -> float:
        return statistics.median(self.floor_seconds)

    @property
    def floor_copy_ratio(self) -> float:
        """The floor's rate as a fraction of the raw COPY rate."""
        return self.copy_median_s / self.floor_median_s

    @property
    def floor_ratio(self) -> float:
        """Our rate as a fraction of the floor's."""
        return self.floor_median_s / self.seconds

    @property
    def local_s(self) -> float:
        """Drain time outside the round trips: claiming, JSON, marking (SQLite + Python)."""
        return self.seconds - self.round_trips_s


@dataclass(frozen=True)
class DrainProfile:
    rows: int
    batch_size: int
    wall_s: float  # under the profiler, so slower than the measured drain
    phases: list[tuple[str, float]]  # (label, cumulative seconds)
    top: list[ProfileEntry]


@dataclass
class PushBenchResult:
    machine: Machine
    rows: int
    small_rows: int
    repeats: int
    warmup: int
    database: str
    profile_rows: int = 0
    batches: list[BatchResult] = field(default_factory=list)
    drains: list[DrainResult] = field(default_factory=list)
    profiles: list[DrainProfile] = field(default_factory=list)
    elapsed_s: float = 0.0
    load_at_end: str = ""


def _mb(kb: int) -> float:
    return kb / 1024


def to_markdown(result: PushBenchResult, command: str | None = None) -> str:
    m = result.machine
    lines = ["### Upload (push): measured", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        *machine_lines(m, load_at_end=result.load_at_end),
        f"- scratch database `{result.database}` (dropped after), device role `{DEVICE_ROLE}`",
        f"- total run time: {result.elapsed_s:.0f} s",
        "",
    ]
    if result.batches:
        lines += [
            f"**(a) One batch of {LATENCY_BATCH} messages**: `Uploader.push(max_batches=1)` vs "
            f"a raw COPY of the same rows, {result.repeats} repeats each after "
            f"{result.warmup} warm-up, alternating order; first on an empty server, then "
            "again after the drains, with the server holding the last drained backlog of this "
            "owner (and the baseline table as many rows). Nearest-rank p99: with fewer than "
            "100 samples it is the max. ms:",
            "",
            "| server already holds | push p50 | push p99 | push max | COPY p50 | COPY p99 "
            "| COPY max | push / COPY (p50) |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for b in result.batches:
            lines.append(
                f"| {b.server_before:,} messages | {b.ours.p50_ms:.1f} | {b.ours.p99_ms:.1f} "
                f"| {b.ours.max_ms:.1f} | {b.copy.p50_ms:.1f} | {b.copy.p99_ms:.1f} "
                f"| {b.copy.max_ms:.1f} | {b.ratio_p50:.1f}x |"
            )
        lines.append("")
    if result.drains:
        lines += [
            "**(b) Draining a backlog**: one chat + N messages, one `push()` until the outbox "
            "is empty, on an emptied server; raw COPY = median of the COPY samples of the same "
            "N rows taken in this run; floor = median of the samples of the same N rows "
            f"INSERTed straight into `acode_sync.messages`, {FLOOR_BATCH:,} per statement and "
            "transaction, through its keys, foreign key, row-level security and change-log "
            "trigger, with no push logic and no local work (what no upload at that batch size "
            "can beat):",
            "",
            "| N | batch_size | batches | drain s | rows/s | COPY rows/s | ours / COPY "
            "| floor rows/s | floor / COPY | ours / floor |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for d in result.drains:
            lines.append(
                f"| {d.rows:,} | {d.batch_size:,} | {d.batches:,} | {d.seconds:.2f} "
                f"| {d.rows_per_s:,.0f} | {d.copy_rows_per_s:,.0f} | {d.copy_ratio:.3f} "
                f"| {d.rows / d.floor_median_s:,.0f} | {d.floor_copy_ratio:.3f} "
                f"| {d.floor_ratio:.3f} |"
            )
        lines.append("")
        for size in sorted({d.rows for d in result.drains}):
            first = next(d for d in result.drains if d.rows == size)
            lines.append(
                f"- COPY samples, N={size:,}: "
                + ", ".join(f"{s:.3f} s" for s in first.copy_seconds)
            )
            lines.append(
                f"- floor samples, N={size:,}: "
                + ", ".join(f"{s:.3f} s" for s in first.floor_seconds)
            )
        lines += [
            "",
            "Where the drain time goes (round trips timed in the client around `push_batch`; "
            "server time from `pg_stat_user_functions`; local = drain - round trips) and "
            "**(c) peak RSS** of the draining process (VmHWM of its own child process):",
            "",
            "| N | batch_size | round trips s | server push() s | of which change-log trigger s "
            "| local s | round trip, first 10% of batches, ms | last 10%, ms "
            "| RSS ready MB | RSS peak MB |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for d in result.drains:
            push_s = f"{d.server_push_ms / 1e3:.2f}" if d.server_push_ms is not None else "n/a"
            log_s = f"{d.server_log_ms / 1e3:.2f}" if d.server_log_ms is not None else "n/a"
            lines.append(
                f"| {d.rows:,} | {d.batch_size:,} | {d.round_trips_s:.2f} | {push_s} | {log_s} "
                f"| {d.local_s:.2f} | {d.first_batches_ms:.1f} | {d.last_batches_ms:.1f} "
                f"| {_mb(d.rss_ready_kb):.1f} | {_mb(d.rss_peak_kb):.1f} |"
            )
        lines.append("")
    lines += ["Against the targets:", ""]
    for b in result.batches:
        where = f"server holding {b.server_before:,} messages"
        lines += [
            f"- spec, one batch of 50, {where}: typical (p50) "
            f"{verdict(b.ours.p50_ms, SPEC_TYPICAL_MS, ' ms')}; max "
            f"{verdict(b.ours.max_ms, SPEC_MAX_MS, ' ms')}",
            f"- ours, one batch of 50 <= {TARGET_BATCH_MS:g} ms, {where}: p50 "
            f"{verdict(b.ours.p50_ms, TARGET_BATCH_MS, ' ms')}; p99 "
            f"{verdict(b.ours.p99_ms, TARGET_BATCH_MS, ' ms')}",
        ]
    full = [d for d in result.drains if d.rows == result.rows]
    for d in full:
        if d.batch_size == 50:
            lines.append(
                f"- ours, drain of {d.rows:,} at batch_size 50: "
                f"{verdict(d.rows_per_s, TARGET_ROWS_PER_S_50, ' rows/s', at_least=True)}"
            )
        if d.batch_size == 1000:
            lines.append(
                f"- ours, drain of {d.rows:,} at batch_size 1,000 vs raw COPY: "
                f"{verdict(d.copy_ratio, TARGET_COPY_RATIO_1000, 'x', at_least=True)}; "
                f"the floor itself reached {d.floor_copy_ratio:.2f}x of COPY in this run, "
                f"ours {d.floor_ratio:.2f}x of the floor"
            )
    if result.drains:
        peak = max(result.drains, key=lambda d: d.rss_peak_kb)
        lines.append(
            f"- ours, peak RSS <= {TARGET_RSS_MB:g} MB: "
            f"{verdict(_mb(peak.rss_peak_kb), TARGET_RSS_MB, ' MB')} "
            f"(highest: N={peak.rows:,}, batch_size {peak.batch_size})"
        )
        for batch_size in DRAIN_BATCHES:
            pair = sorted(
                (d for d in result.drains if d.batch_size == batch_size), key=lambda d: d.rows
            )
            if len(pair) == 2:
                growth = _mb(pair[1].rss_peak_kb - pair[0].rss_peak_kb)
                lines.append(
                    f"- RSS vs backlog at batch_size {batch_size}: N={pair[0].rows:,} "
                    f"{_mb(pair[0].rss_peak_kb):.1f} MB, N={pair[1].rows:,} "
                    f"{_mb(pair[1].rss_peak_kb):.1f} MB (x{pair[1].rows // pair[0].rows} "
                    f"backlog: {growth:+.1f} MB)"
                )
    for p in result.profiles:
        lines += profile_lines(
            f"**Profile** (cProfile, drain of {p.rows:,} at batch_size {p.batch_size}, "
            f"{p.wall_s:.1f} s under the profiler; cumulative time per phase):",
            p.wall_s,
            p.phases,
            p.top,
        )
    return "\n".join(lines) + "\n"
