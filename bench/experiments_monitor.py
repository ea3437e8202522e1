"""The experiment monitor's auto-stop, simulated end to end with the service's own look
(``learning/experiments/monitor.py:look``): how soon a guardrail regression of each size stops the
experiment, and how often a healthy (A/A) experiment is stopped, next to the baseline measured in
the same run: a fixed-horizon one-sided z-test on the same guardrail, read at the same looks (what
a dashboard refreshed every minute does).

Traffic: ``--users-per-minute`` users enter, split 50/50; each converts on the guardrail metric with
the control's rate (20%) or the treatment's (lower by the injected regression, relative); one look
a minute for ``--hours``. Rates with 95% Wilson intervals; minutes to stop over the runs that stopped.

    .venv/bin/python bench/experiments_monitor.py               # ~1-2 min
    .venv/bin/python bench/experiments_monitor.py --runs 500 --hours 8
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence

import numpy as np
from _report import fmt, print_environment, progress, table
from scipy import special

from rewardloop.learning.experiments import lifecycle
from rewardloop.learning.experiments.buckets import BUCKETS
from rewardloop.learning.experiments.monitor import STOP, MonitorState, look
from rewardloop.learning.experiments.simulation import Rate
from rewardloop.learning.experiments.spec import spec_from_dict

BASE_RATE = 0.2
REGRESSIONS = (0.0, 0.05, 0.10, 0.20)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="simulated experiments per regression size")
    parser.add_argument("--hours", type=float, default=4.0, help="simulated hours per experiment")
    parser.add_argument("--users-per-minute", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def experiment() -> lifecycle.Experiment:
    spec = spec_from_dict(
        "bench",
        {
            "variants": {"control": 1, "treatment": 1},
            "primary_metric": {"source": "click"},
            "guardrails": [{"source": "purchase"}],
        },
    )
    return lifecycle.start(lifecycle.create(spec, 0), np.ones(BUCKETS, dtype=bool), 0)


def run(rng: np.random.Generator, regression: float, looks: int, per_minute: int) -> tuple[int, int]:
    """Minutes until the monitor stopped it and until the peeked fixed test first rejected (0: never)."""
    running = experiment()
    rates = {"control": BASE_RATE, "treatment": BASE_RATE * (1 - regression)}
    users = dict.fromkeys(rates, 0)
    hits = dict.fromkeys(rates, 0.0)
    state, stopped, naive = MonitorState(), 0, 0
    critical = special.ndtri(0.95)
    for minute in range(1, looks + 1):
        split = rng.binomial(per_minute, 0.5)
        for variant, n in (("control", split), ("treatment", per_minute - split)):
            users[variant] += n
            hits[variant] += float(rng.binomial(n, rates[variant]))
        sums = {v: {"purchase_conversion": (hits[v], hits[v])} for v in rates}
        if not stopped:
            outcome = look(running, users, sums, state, now_ms=minute * 60_000)
            state = outcome.state
            stopped = minute if outcome.action == STOP else 0
        if not naive and min(users.values()) >= 100:
            p = {v: hits[v] / users[v] for v in rates}
            se = math.sqrt(sum(p[v] * (1 - p[v]) / users[v] for v in rates))
            naive = minute if se > 0 and (p["control"] - p["treatment"]) / se >= critical else 0
        if stopped and naive:
            break
    return stopped, naive


def main() -> None:
    args = parse_args()
    looks = int(args.hours * 60)
    rows = []
    started = time.perf_counter()
    for index, regression in enumerate(REGRESSIONS):
        progress(f"regression {regression:.0%}: {args.runs} runs of {looks} looks")
        rng = np.random.default_rng((args.seed, index))
        outcomes = [run(rng, regression, looks, args.users_per_minute) for _ in range(args.runs)]
        for name, column in (("monitor (mixture SPRT, always valid)", 0), ("fixed z-test read every minute", 1)):
            minutes = np.array([o[column] for o in outcomes])
            rate = Rate.of(minutes > 0)
            low, high = rate.interval()
            stopped = minutes[minutes > 0]
            rows.append([
                f"{regression:.0%}", name, f"{fmt(100 * rate.rate, 1)} [{fmt(100 * low, 1)}, {fmt(100 * high, 1)}]",
                fmt(float(np.median(stopped)), 3) if stopped.size else "-",
                fmt(float(np.percentile(stopped, 90)), 3) if stopped.size else "-",
            ])  # fmt: skip
    print(
        f"\nGuardrail auto-stop: {args.users_per_minute} users a minute, one look a minute for {args.hours:g} h, "
        f"{args.runs} runs per row; guardrail conversion {BASE_RATE:.0%} in control, tolerance 0, alpha 0.05"
    )
    print(table(["regression", "test", "stopped % [95% CI]", "median minutes", "p90 minutes"], rows))
    print("0% is A/A: every stop there is a false alarm (the monitor's bound: 5% over any number of looks).")
    print(f"({time.perf_counter() - started:.0f} s)")
    print_environment({})


if __name__ == "__main__":
    main()
