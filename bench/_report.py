"""Printing what the benchmarks measured: tables, progress lines, the environment, JSON files.

Every figure printed or written goes through here, so the benchmarks format numbers, warn
about a disturbed machine and describe the environment the same way.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import platform
import pstats
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from _measure import ROLES, Level


def fmt(value: float, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Plain-text table; the first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        padded = [row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))]
        return "  ".join(padded)

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


# Levels during which processes outside the benchmark used more than this (% of one core).
DISTURBED_PERCENT = 20.0


def warn_if_disturbed(levels: Sequence[Level]) -> None:
    """Say so when other processes on the machine competed for the CPU during some levels."""
    disturbed = [lv for lv in levels if lv.cpu_percent("other") > DISTURBED_PERCENT]
    if disturbed:
        worst = max(lv.cpu_percent("other") for lv in disturbed)
        print(
            f"\nWARNING: during {len(disturbed)} of {len(levels)} levels, other processes on this machine"
            f" used > {DISTURBED_PERCENT:.0f}% of a core (up to {worst:.0f}%, column 'cpu other'):"
            " those figures are disturbed; rerun on a quiet machine"
        )


def cpu_cells(level: Level) -> list[str]:
    return [fmt(level.cpu_percent(r), 0) for r in ROLES]


def environment() -> dict[str, str]:
    import google.protobuf
    import numpy
    import ray
    import redis

    model = ""
    try:
        with open("/proc/cpuinfo") as info:
            model = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), "")
    except OSError:
        pass
    return {
        "code": _code_version(),
        "cores": f"{os.cpu_count()} logical ({len(os.sched_getaffinity(0))} usable) {model}".strip(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "ray": ray.__version__,
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
        "redis-py": redis.__version__,
        "numpy": numpy.__version__,
    }


def _code_version() -> str:
    """Where rewardloop is imported from, and its git revision (the tree may have edits)."""
    import rewardloop.workers

    root = Path(rewardloop.workers.__file__).resolve().parents[3]

    def git(*args: str) -> str:
        command = ["git", "-C", str(root), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=5).stdout

    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        changed = git("status", "--porcelain", "--untracked-files=no", "--", "server", "workers").splitlines()
    except (OSError, subprocess.SubprocessError):
        head, changed = "", []
    if not head:
        return f"rewardloop from {root} (not a git checkout)"
    edits = f", {len(changed)} modified file(s) in server/ and workers/" if changed else ", clean"
    return f"rewardloop from {root} (git {head}{edits})"


def print_profile(profiler: cProfile.Profile, what: str, lines: int = 25) -> None:
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(lines)
    print(f"\ncProfile of this process (gRPC front + Ray driver) during {what}, by own time")
    print("(main thread only; profiling slows the front: a --profile run's figures are not its speed)")
    print(out.getvalue())


def print_environment(extra: Mapping[str, str]) -> None:
    print("environment")
    for key, value in {**environment(), **extra}.items():
        print(f"  {key:<14} {value}")
    print(flush=True)


def write_json(path: str, args: argparse.Namespace, document: Mapping[str, Any]) -> None:
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    document = {"environment": environment(), "settings": settings, **document}
    with open(path, "w") as out:
        json.dump(document, out, indent=2, default=str)
    print(f"\nwrote {path}")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def progress_level(label: str, level: Level, unit: str = "rps") -> None:
    """One progress line per measured level."""
    result = level.result
    progress(
        f"  {label:<32} {level.spec.concurrency:>4} in flight: {level.rate:9,.0f} {unit}"
        f"  p50 {fmt(level.latency_ms(50))} ms  p99 {fmt(level.latency_ms(99))} ms  errors {result.errors}"
        + (f"  ({result.first_error})" if result.first_error else "")
    )
