"""How a benchmark reads: progress, percentiles, latency, verdicts against
targets, cProfile summaries, and how the Markdown report leaves."""

from __future__ import annotations

import math
import pstats
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def progress(message: str, quiet: bool) -> None:
    """A progress line on stderr (the report goes to stdout)."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def percentile(ordered: Sequence[T], pct: float) -> T:
    """Nearest-rank percentile of an already sorted, non-empty sequence."""
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Latency:
    """Wall time of one side of a comparison, in milliseconds."""

    n: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of_ns(cls, samples_ns: Sequence[int]) -> Latency:
        return cls.of_ms([ns / 1e6 for ns in samples_ns])

    @classmethod
    def of_seconds(cls, samples_s: Sequence[float]) -> Latency:
        return cls.of_ms([s * 1e3 for s in samples_s])

    @classmethod
    def of_ms(cls, samples_ms: Sequence[float]) -> Latency:
        if not samples_ms:
            raise ValueError("no samples")
        ordered = sorted(samples_ms)
        return cls(
            n=len(ordered),
            p50_ms=percentile(ordered, 50),
            p99_ms=percentile(ordered, 99),
            max_ms=ordered[-1],
        )


def verdict(
    value: float, limit: float, unit: str, *, at_least: bool = False, digits: int = 2
) -> str:
    """'met (...)' or '**missed** (...)' of ``value`` against ``limit``."""
    ok = value >= limit if at_least else value <= limit
    sign = ">=" if at_least else "<="
    shown = f"{value:,.{digits}f}{unit}"
    if ok:
        return f"met ({shown} {sign} {limit:,g}{unit})"
    if at_least:
        miss = f"short by {(1 - value / limit) * 100:.0f}%"
    elif value > 2 * limit:
        miss = f"over by {value / limit:.1f}x"
    else:
        miss = f"over by {(value / limit - 1) * 100:.0f}%"
    return f"**missed** ({shown}, target {sign} {limit:,g}{unit}: {miss})"


def emit(report: str, out: Path | None) -> None:
    """Print the Markdown report and, with ``--out``, write it there too."""
    print(report, end="")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report, encoding="utf-8")


@dataclass(frozen=True)
class ProfileEntry:
    name: str
    calls: int
    tottime_s: float
    cumtime_s: float


# (label, function name as cProfile records it, file suffix)
Phase = tuple[str, str, str]


def read_profile(
    path: Path, phases: Sequence[Phase], top: int
) -> tuple[list[tuple[str, float]], list[ProfileEntry]]:
    """From a cProfile dump: the cumulative seconds of each phase's function,
    and the ``top`` functions by own time."""
    table: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    table = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]  # not in typeshed
    found = [
        (
            label,
            sum(
                entry[3]
                for (file, _line, name), entry in table.items()
                if name == func and file.endswith(suffix)
            ),
        )
        for label, func, suffix in phases
    ]
    entries = [
        ProfileEntry(
            name=_function_label(file, line, name),
            calls=entry[1],
            tottime_s=entry[2],
            cumtime_s=entry[3],
        )
        for (file, line, name), entry in table.items()
    ]
    entries.sort(key=lambda e: e.tottime_s, reverse=True)
    return found, entries[:top]


def _function_label(file: str, line: int, name: str) -> str:
    if file == "~":
        return name  # a built-in, e.g. <method 'execute' of 'sqlite3.Connection' objects>
    parts = Path(file).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else file
    return f"{short}:{line} {name}"


def profile_lines(
    heading: str, wall_s: float, phases: Iterable[tuple[str, float]], top: Sequence[ProfileEntry]
) -> list[str]:
    """A cProfile summary: cumulative time per phase, then the top functions."""
    lines = ["", heading, "", "| phase | cumulative s | share |", "|---|--:|--:|"]
    for label, seconds in phases:
        lines.append(f"| {label} | {seconds:.2f} | {seconds / wall_s:.0%} |")
    lines += [
        "",
        "| top functions by own time | calls | own s | cumulative s |",
        "|---|--:|--:|--:|",
    ]
    for entry in top:
        name = entry.name.replace("|", "\\|")
        lines.append(
            f"| `{name}` | {entry.calls:,} | {entry.tottime_s:.2f} | {entry.cumtime_s:.2f} |"
        )
    return lines
