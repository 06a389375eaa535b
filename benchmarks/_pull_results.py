"""What a pull benchmark found, and its Markdown report against the targets."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from _pull_apply import PullResult
from _pull_detect import DETECT_TIMINGS, DetectResult, ResolveResult, WinnerResult
from _pull_push_check import PushCheckResult
from harness import DEVICE_ROLE, Machine, ProfileEntry, machine_lines, profile_lines, verdict

# Targets the results are compared against.
TARGET_PULL_ROWS_PER_S = 20_000.0  # ours: pull + apply
SPEC_DETECT_TYPICAL_MS = 1.0  # specification: conflict detection per item, typical
SPEC_DETECT_MAX_MS = 5.0  # specification: conflict detection per item, max
TARGET_DETECT_MS = 0.05  # ours: conflict detection per item


@dataclass(frozen=True)
class PullProfile:
    wall_s: float  # under the profiler
    phases: list[tuple[str, float]]
    top: list[ProfileEntry]


@dataclass
class PullBenchResult:
    machine: Machine
    rows: int
    database: str
    fill_s: float = 0.0
    pull: PullResult | None = None
    detection: list[DetectResult] = field(default_factory=list)
    resolve: ResolveResult | None = None
    winner: WinnerResult | None = None
    push_check: PushCheckResult | None = None
    profile: PullProfile | None = None
    elapsed_s: float = 0.0
    load_at_end: str = ""


def to_markdown(result: PullBenchResult, command: str | None = None) -> str:
    m = result.machine
    lines = ["### Download and conflict detection: measured", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        *machine_lines(m, load_at_end=result.load_at_end),
        f"- local files: fresh, in `{m.db_dir}` ({m.filesystem}), WAL, synchronous=NORMAL",
        f"- scratch database `{result.database}` (dropped after), device role `{DEVICE_ROLE}`; "
        f"server filled with 1 chat + {result.rows:,} messages by direct inserts as the "
        f"device ({result.fill_s:.1f} s, not part of any figure below)",
        f"- total run time: {result.elapsed_s:.0f} s",
        "",
    ]
    p = result.pull
    if p is not None:
        pages = p.fetch_page_ms
        mid = pages[len(pages) // 2] if pages else 0.0
        lines += [
            f"**(1) Pull and apply** of {p.changes:,} changes ({p.rows:,} messages + their "
            f"chat): one `Puller.pull`, page_size {p.page_size:,}, {p.pages} pages, on a fresh "
            "reader; baseline: the same message rows (same 10 columns) in one `executemany` "
            "transaction into a trigger-less copy of `messages`, before and after the pull:",
            "",
            "| | s | rows/s | share of the pull |",
            "|---|--:|--:|--:|",
            f"| pull + apply (ours), end to end | {p.seconds:.2f} | {p.rows_per_s:,.0f} | 100% |",
            f"| - fetch: `pull_page` (server + round trip) | {p.fetch_s:.2f} "
            f"| {p.changes / p.fetch_s:,.0f} | {p.fetch_s / p.seconds:.0%} |",
            f"| - the rest: inbox + cursor + gaps, less overlapped fetch | {p.inbox_s:.2f} "
            f"| {p.changes / p.inbox_s:,.0f} | {p.inbox_s / p.seconds:.0%} |",
            f"| - apply (`_apply_pending`) | {p.apply_s:.2f} "
            f"| {p.changes / p.apply_s:,.0f} | {p.apply_s / p.seconds:.0%} |",
            f"| local work only (inbox + apply) | {p.inbox_s + p.apply_s:.2f} "
            f"| {p.changes / (p.inbox_s + p.apply_s):,.0f} | "
            f"{(p.inbox_s + p.apply_s) / p.seconds:.0%} |",
            f"| raw SQLite insert (baseline, median) | {p.baseline_median_s:.2f} "
            f"| {p.baseline_rows_per_s:,.0f} | |",
            "",
            f"- baseline samples: {', '.join(f'{s:.2f} s' for s in p.baseline_s)}; "
            f"pull / baseline, time per row: {p.ratio:.1f}x",
            f"- `pull_page` per page: first {pages[0]:,.0f} ms, middle {mid:,.0f} ms, "
            f"last {pages[-1]:,.0f} ms (cursor at 0, half-way, at the end)",
        ]
        if p.scans is not None:
            lines.append(
                f"- server, `acode_sync.changes` during the pull: {p.scans.seq_scan:,} "
                f"sequential scans reading {p.scans.seq_tup_read:,} rows, "
                f"{p.scans.idx_scan:,} index scans (for {p.changes:,} changes delivered)"
            )
        lines += [
            f"- checks: reader has {p.local_messages:,} messages and {p.local_chats} chat, "
            f"every column equal to the writer's rows: {p.rows_equal}; inbox {p.inbox}; "
            f"cursor {p.cursor:,} = last seq {p.last_seq:,}; outbox rows {p.outbox_rows}",
            "",
        ]
    if result.detection:
        lines += [
            "**(2) Conflict detection at pull**, as implemented in `apply_inbox`: its "
            "query of pending inbox rows with an open outbox row for the same entity "
            "(one probe of the `sync_outbox_entity` index per change), timed alone inside "
            "the write transaction ("
            f"{DETECT_TIMINGS} timings per page); none of the open rows are "
            "for these entities, so nothing conflicts. `apply_inbox` of the same page "
            "beside it:",
            "",
            "| page (pending rows) | open outbox rows | pages | detection per page µs (median) "
            "| detection per item µs (median) | worst sample, per item µs "
            "| apply_inbox per item µs (median) |",
            "|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for d in result.detection:
            lines.append(
                f"| {d.page:,} | {d.open_rows:,} | {len(d.apply_ns)} "
                f"| {statistics.median(d.detect_ns) / 1e3:,.1f} | {d.detect_us_per_item:,.2f} "
                f"| {d.detect_max_us_per_item:,.2f} | {d.apply_us_per_item:,.1f} |"
            )
        by_key = {(d.page, d.open_rows): d for d in result.detection}
        k = max(d.open_rows for d in result.detection)
        lines.append("")
        for size in sorted({d.page for d in result.detection}, reverse=True):
            if (size, 0) in by_key and (size, k) in by_key:
                extra = by_key[(size, k)].apply_us_per_item - by_key[(size, 0)].apply_us_per_item
                lines.append(
                    f"- `apply_inbox` with {k:,} open rows vs none, page of {size:,}: "
                    f"{extra:+,.2f} µs per item"
                )
        lines.append("")
    r = result.resolve
    if r is not None:
        lines += [
            f"**Resolution of real conflicts at pull**: `apply_inbox` of {r.items} remote "
            f"updates (version 2) of messages with a local edit pending: {r.conflict_s * 1e3:.1f}"
            f" ms ({r.local_wins} local wins, {r.remote_wins} remote wins, {r.files} loser "
            f"files written, ACODE-SYNC-003 logged to a buffer) vs {r.items} remote updates of "
            f"messages without local edits: {r.clean_s * 1e3:.1f} ms; extra per conflicting "
            f"item: {r.extra_us_per_item:,.0f} µs (the remote rows are made locally from "
            "pulled rows).",
            "",
        ]
    w = result.winner
    if w is not None:
        lines += [
            f"**`conflicts.choose_winner`** (last_write_wins, two ISO times parsed and "
            f"compared): {w.us_per_call:.2f} µs per call (median of {len(w.run_s)} runs of "
            f"{w.calls:,} calls).",
            "",
        ]
    c = result.push_check
    if c is not None:
        lines += [
            f"**(3) Conflict detection at push** (server): `remote.push_batch` of {c.batch:,} "
            "message updates, one round trip and one server transaction each, JSON built "
            f"before timing; {len(c.applied_s)} of each kind after a warm-up pair, "
            "interleaved:",
            "",
            "| batch | median ms | min ms | max ms | per item µs |",
            "|---|--:|--:|--:|--:|",
            f"| {c.batch:,} updates on the current version (applied) | {c.applied_ms:.1f} "
            f"| {min(c.applied_s) * 1e3:.1f} | {max(c.applied_s) * 1e3:.1f} "
            f"| {c.applied_ms / c.batch * 1e3:.1f} |",
            f"| {c.batch:,} stale updates (conflict, logged) | {c.stale_ms:.1f} "
            f"| {min(c.stale_s) * 1e3:.1f} | {max(c.stale_s) * 1e3:.1f} "
            f"| {c.stale_us_per_item:.1f} |",
            "",
            f"- extra per conflicting item (stale - applied): {c.extra_us_per_item:+.1f} µs; "
            f"conflict rows logged on the server: {c.conflicts_logged:,}",
            "",
        ]
    lines += ["Against the targets:", ""]
    spec_typical_us = SPEC_DETECT_TYPICAL_MS * 1e3
    spec_max_us = SPEC_DETECT_MAX_MS * 1e3
    ours_us = TARGET_DETECT_MS * 1e3
    if p is not None:
        rate = verdict(p.rows_per_s, TARGET_PULL_ROWS_PER_S, " rows/s", at_least=True, digits=0)
        lines.append(f"- ours, pull + apply >= {TARGET_PULL_ROWS_PER_S:,g} rows/s: {rate}")
    for d in result.detection:
        typical, worst = d.detect_us_per_item, d.detect_max_us_per_item
        lines.append(
            f"- detection at pull per item, page of {d.page:,}, {d.open_rows:,} open rows: "
            f"spec typical {verdict(typical, spec_typical_us, ' µs')}, max "
            f"{verdict(worst, spec_max_us, ' µs')}; ours: typical "
            f"{verdict(typical, ours_us, ' µs')}, worst {verdict(worst, ours_us, ' µs')}"
        )
    if w is not None:
        lines.append(f"- `choose_winner` per call: ours {verdict(w.us_per_call, ours_us, ' µs')}")
    if c is not None:
        worst_extra = (max(c.stale_s) * 1e3 - c.applied_ms) / c.batch * 1e3
        lines.append(
            "- detection at push, extra per conflicting item (stale - applied batch, medians): "
            f"spec typical {verdict(c.extra_us_per_item, spec_typical_us, ' µs')}, max "
            f"(slowest stale batch) {verdict(worst_extra, spec_max_us, ' µs')}; ours "
            f"{verdict(c.extra_us_per_item, ours_us, ' µs')}"
        )
    if r is not None:
        lines.append(
            "- (for scale, not a detection target) resolution of a real conflict at pull, "
            f"extra per item: {r.extra_us_per_item:,.0f} µs"
        )
    prof = result.profile
    if prof is not None:
        lines += profile_lines(
            f"**Profile** (cProfile, a second full pull on a fresh reader, {prof.wall_s:.1f} s "
            "under the profiler; cumulative time per phase):",
            prof.wall_s,
            prof.phases,
            prof.top,
        )
    return "\n".join(lines) + "\n"
