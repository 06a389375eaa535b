"""What the benchmark scripts share: how a report leaves, how a profile reads."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


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
