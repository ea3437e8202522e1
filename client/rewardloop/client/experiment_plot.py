"""The effect-over-time plot of an experiment (PNG): each metric's lift per treatment, with its
interval, at every look the monitor recorded (`ExperimentResults.timeline`).

Needs matplotlib, which the SDK does not require: ``pip install 'rewardloop-client[plot]'``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from rewardloop.v1 import experiments_pb2 as xp


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def plot_effects(results: xp.ExperimentResults, path: str | Path) -> Path:
    """Writes the plot to ``path``; one panel per metric (primary first), one line per treatment."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable("plot needs matplotlib: pip install 'rewardloop-client[plot]'") from exc
    spec = results.experiment.spec
    metrics = [spec.primary_metric.name, *(g.name for g in spec.guardrails)]
    series: dict[str, dict[str, list[xp.EffectPoint]]] = defaultdict(lambda: defaultdict(list))
    for point in results.timeline:
        series[point.metric][point.variant].append(point)
    start = results.experiment.started_at_ms or min((p.at_ms for p in results.timeline), default=0)
    figure, axes = plt.subplots(len(metrics), 1, figsize=(8, 2.6 * len(metrics)), sharex=True, squeeze=False)
    for axis, metric in zip(axes[:, 0], metrics, strict=True):
        for variant, points in sorted(series[metric].items()):
            usable = [p for p in points if not math.isnan(p.relative)]
            hours = [(p.at_ms - start) / 3_600_000 for p in usable]
            (line,) = axis.plot(hours, [100 * p.relative for p in usable], marker=".", label=variant)
            axis.fill_between(
                hours,
                [100 * p.relative_ci_low for p in usable],
                [100 * p.relative_ci_high for p in usable],
                color=line.get_color(),
                alpha=0.2,
            )
        if not any(not math.isnan(p.relative) for points in series[metric].values() for p in points):
            axis.text(0.5, 0.5, "no comparison yet (too few users or no events)", ha="center", va="center",
                      transform=axis.transAxes, color="gray")  # fmt: skip
        axis.axhline(0.0, color="black", linewidth=0.8)
        role = "primary" if metric == spec.primary_metric.name else "guardrail"
        axis.set_title(f"{metric} ({role})", fontsize=10)
        axis.set_ylabel("lift vs control, %")
        if any(line.get_label() in series[metric] for line in axis.get_lines()):
            axis.legend(loc="upper left", fontsize=8)
    axes[-1, 0].set_xlabel("hours since start")
    confidence = 1 - spec.alpha if spec.alpha else 0.95
    figure.suptitle(f"{spec.name}: effect over time ({confidence:.0%} pointwise intervals)", fontsize=11)
    figure.tight_layout()
    out = Path(path)
    figure.savefig(out, format="png", dpi=100)
    plt.close(figure)
    return out
