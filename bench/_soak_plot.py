"""The soak's PNG: every series over time, so that a slow leak or a periodic stall is seen at a glance.

Panels, sharing the time axis (minutes since the load started): RSS per process; Redis
memory and AOF size, with its key count on a second axis; p50/p99 per RPC with the 250 ms
line; failed RPCs and shed pairs per interval. The warm-up is shaded, and Redis forks (an
AOF rewrite or a background save in progress, or a new fork since the last sample) and
shard restarts are drawn as vertical lines on every panel: they explain most steps and spikes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _soak_report import MAX_P99_MS, MB, Row, shard_series
from matplotlib.ticker import FuncFormatter, NullFormatter

RSS_SERIES = ("rss_front", "rss_redis", "rss_ray", "rss_load")


def events(rows: Sequence[Row]) -> list[tuple[float, str]]:
    """(minute, label) of the moments worth marking: Redis forks and shard restarts."""
    marks = []
    previous: Row | None = None
    for row in rows:
        minute = row["t_s"] / 60
        forking = row.get("redis_aof_rewrite_in_progress") or row.get("redis_bgsave_in_progress")
        forked = previous is not None and row.get("redis_latest_fork_usec") != previous.get("redis_latest_fork_usec")
        if forking or forked:
            marks.append((minute, "Redis fork (AOF rewrite / save)"))
        if previous is not None and len(shard_series([row])) > len(shard_series([previous])):
            marks.append((minute, "new shard process"))
        previous = row
    return marks


def plot(rows: Sequence[Row], path: Path, title: str, warmup_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gauges = sorted({k for row in rows for k in row if k.startswith("svc_")})
    panels = 6 if gauges else 5
    figure, axes = plt.subplots(panels, 1, figsize=(11, 3.2 * panels + 0.5), sharex=True)
    minutes = [row["t_s"] / 60 for row in rows]
    _rss_panel(axes[0], rows, minutes)
    _redis_panel(axes[1], rows, minutes)
    if gauges:
        _gauges_panel(axes[2], rows, minutes, gauges)
    _cpu_panel(axes[-3], rows, minutes)
    _latency_panel(axes[-2], rows, minutes)
    _errors_panel(axes[-1], rows, minutes)
    marks = events(rows)
    for ax in axes:
        ax.axvspan(0, warmup_s / 60, color="0.9", zorder=0)
        for minute, label in marks:
            color = "tab:purple" if label.startswith("Redis") else "tab:red"
            ax.axvline(minute, color=color, linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
    labels = sorted({label for _, label in marks})
    legend = "grey: warm-up" + (f"; dotted lines: {'; '.join(labels)}" if labels else "")
    axes[0].set_title(f"{title}\n{legend}", fontsize=9)
    axes[-1].set_xlabel("minutes since the load started")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _series(rows: Sequence[Row], key: str, scale: float = 1.0) -> list[float]:
    return [row.get(key, math.nan) / scale for row in rows]


def _rss_panel(ax: Any, rows: Sequence[Row], minutes: list[float]) -> None:
    for key in (*RSS_SERIES[:1], *shard_series(rows), *RSS_SERIES[1:]):
        ax.plot(minutes, _series(rows, key, MB), marker=".", label=key.removeprefix("rss_"))
    ax.set_ylabel("RSS (MB)")
    ax.legend(fontsize=8, ncol=3, loc="upper left")


def _redis_panel(ax: Any, rows: Sequence[Row], minutes: list[float]) -> None:
    for key, label in (("redis_used_memory", "used_memory"), ("redis_used_memory_rss", "used_memory_rss"),
                       ("redis_aof_bytes", "AOF size")):  # fmt: skip
        ax.plot(minutes, _series(rows, key, MB), marker=".", label=label)
    ax.set_ylabel("Redis (MB)")
    keys = ax.twinx()
    keys.plot(minutes, _series(rows, "redis_keys"), color="black", linestyle="--", label="keys (right)")
    keys.set_ylabel("keys")
    handles = ax.get_legend_handles_labels()[0] + keys.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=8, loc="upper left")


def _gauges_panel(ax: Any, rows: Sequence[Row], minutes: list[float], gauges: list[str]) -> None:
    """The service's own gauges that moved during the run: bytes in MB on the left, counts on the
    right. Left out: limits (a budget or maxmemory, a flat line far above the rest would flatten it)
    and series that never changed (dozens of them, e.g. agent counters on a service without agents;
    their values are in soak.json): drawn, their legend covered the panel."""
    counts = ax.twinx()
    steady = 0
    for key in gauges:
        name = key.removeprefix("svc_rewardloop_")
        if "budget" in name or "maxmemory" in name:
            continue
        values = {v for v in _series(rows, key) if not math.isnan(v)}
        if len(values) <= 1:
            steady += 1
            continue
        if name.split("{")[0].endswith("bytes"):
            ax.plot(minutes, _series(rows, key, MB), marker=".", label=name)
        else:
            counts.plot(minutes, _series(rows, key), linestyle="--", label=f"{name} (right)")
    ax.set_ylabel("service gauges (MB)")
    counts.set_ylabel("count")
    handles = ax.get_legend_handles_labels()[0] + counts.get_legend_handles_labels()[0]
    title = f"{steady} steady gauges not drawn (soak.json)" if steady else None
    ax.legend(handles=handles, fontsize=6, ncol=3, loc="upper left", title=title, title_fontsize=6)


def _cpu_panel(ax: Any, rows: Sequence[Row], minutes: list[float]) -> None:
    """Cores used per role in each interval: what a latency spike may line up with."""
    roles = sorted({k for row in rows for k in row if k.startswith("cpu_")})
    for key in roles:
        ax.plot(minutes, _series(rows, key), marker=".", label=key.removeprefix("cpu_"))
    ax.set_ylabel("CPU (cores)")
    ax.legend(fontsize=8, ncol=4, loc="upper left")


def _latency_panel(ax: Any, rows: Sequence[Row], minutes: list[float]) -> None:
    for rpc in ("recommend", "record"):
        ax.plot(minutes, _series(rows, f"{rpc}_p50_ms"), marker=".", label=f"{rpc} p50")
        ax.plot(minutes, _series(rows, f"{rpc}_p99_ms"), marker=".", label=f"{rpc} p99")
    # What Redis itself waited on (its latency monitor: fsync, fork, ...), the worst event per interval.
    stalls = sorted({k for row in rows for k in row if k.startswith("redis_stall_ms")})
    if stalls:
        worst = [max((row.get(k, 0.0) for k in stalls), default=0.0) or math.nan for row in rows]
        ax.plot(minutes, worst, marker="x", linestyle="none", color="tab:purple", label="Redis stall (worst)")
    ax.axhline(MAX_P99_MS, color="tab:red", linewidth=1, label=f"{MAX_P99_MS:g} ms")
    ax.set_ylabel("latency per interval (ms)")
    # Log scale: a p50 of a few ms and a stall of seconds both stay readable; room above the line for the legend.
    ax.set_yscale("log")
    p99s = [v for rpc in ("recommend", "record") for v in _series(rows, f"{rpc}_p99_ms") if not math.isnan(v)]
    highest = max(p99s, default=1.0)
    ax.set_ylim(top=max(4 * MAX_P99_MS, 2 * highest))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=8, ncol=5, loc="upper left")


def _errors_panel(ax: Any, rows: Sequence[Row], minutes: list[float]) -> None:
    width = (minutes[1] - minutes[0]) * 0.4 if len(minutes) > 1 else 0.1
    failed = [row["errors"] - row["shed"] for row in rows]
    ax.bar([m - width / 2 for m in minutes], failed, width=width, color="tab:red", label="failed RPCs")
    ax.bar([m + width / 2 for m in minutes], _series(rows, "shed"), width=width, color="tab:orange", label="shed pairs")
    ax.set_ylabel("per interval")
    ax.set_ylim(bottom=0, top=max(1.0, *failed, *_series(rows, "shed")) * 1.3)
    ax.legend(fontsize=8, loc="upper left")
