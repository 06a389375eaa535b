"""What the benchmark scripts share: progress, percentiles, the machine and code
measured, verdicts against targets, how a report leaves, how a profile reads."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from acode_sync.migrations import shipped

T = TypeVar("T")


def progress(message: str, quiet: bool) -> None:
    """A progress line on stderr (the report goes to stdout)."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def percentile(ordered: Sequence[T], pct: float) -> T:
    """Nearest-rank percentile of an already sorted, non-empty sequence."""
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def load_average() -> str:
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def code_version() -> str:
    """The commit measured, whether acode_sync/ or sql/ differ from it, and a hash
    of the shipped SQL (read-only git commands; 'unknown' outside a checkout)."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(root), *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise OSError(done.stderr.strip())
        return done.stdout.strip()

    text = "".join(m.sql for side in ("postgres", "sqlite") for m in shipped(side))
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    try:
        head = git("log", "-1", "--format=%h %ad", "--date=format:%Y-%m-%d %H:%M")
        dirty = git("status", "--porcelain", "--", "acode_sync", "sql")
    except OSError:
        head, dirty = "unknown", ""
    state = " + uncommitted changes in acode_sync/ or sql/" if dirty else ""
    return f"{head}{state}; shipped SQL sha256 {digest}"


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


def profile_lines(
    heading: str, wall_s: float, phases: Iterable[tuple[str, float]], top: Sequence[Any]
) -> list[str]:
    """A cProfile summary: cumulative time per phase, then the top functions
    (``top`` entries have ``name``, ``calls``, ``tottime_s`` and ``cumtime_s``)."""
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
