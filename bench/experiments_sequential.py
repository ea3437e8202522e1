"""The A/B platform's sequential tests, simulated (``learning/experiments/simulation.py``): how often
each test rejects on A/A experiments when looked at daily or continuously, next to the fixed-horizon
z-test peeked at the same looks (the baseline, measured in the same run); the power of a
group-sequential design whose traffic was planned for a 7-day horizon, next to the always-valid
test at the same traffic; and the SRM test on a true 50/50 split and on an injected 52/48.

A/A: ``--users-per-day`` users per arm per day for ``--days`` days; daily looks, and continuous
looks after every batch of ``users-per-day / --looks-per-day`` users per arm. The group-sequential
designs plan the whole run; the always-valid tests use tau = the MDE of that plan. Power: the
planner's traffic for ``--power-days`` daily looks (fixed-horizon normal sample times the
O'Brien-Fleming inflation factor), a true effect at the MDE. Rates with 95% Monte-Carlo (Wilson)
intervals. Bernoulli (10% conversion, MDE 5% relative) and normal (sd 1, MDE 0.05) metrics.

    .venv/bin/python bench/experiments_sequential.py                       # ~5 s
    .venv/bin/python bench/experiments_sequential.py --experiments 10000 --seed 3
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from typing import Any

import scipy
from _report import fmt, print_environment, progress, table, write_json

from rewardloop.learning.experiments.always_valid import SampleRatioTest
from rewardloop.learning.experiments.simulation import FAMILIES, Rate, Scenario, aa_study, power_study, srm_study

BASELINES: dict[str, dict[str, Any]] = {"bernoulli": {"baseline": 0.1}, "normal": {"baseline": 0.0, "sd": 1.0}}
MDES = {"bernoulli": 0.005, "normal": 0.05}
SRM_SPLITS = (0.5, 0.52)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=int, default=2000, help="simulated experiments per family and study")
    parser.add_argument("--days", type=int, default=14, help="days of the A/A experiments (one look per day)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--users-per-day", type=int, default=2000, help="A/A users per arm per day")
    parser.add_argument("--looks-per-day", type=int, default=20, help="continuous looks per day (batches)")
    parser.add_argument("--power-days", type=int, default=7, help="horizon the power study's traffic is planned for")
    parser.add_argument("--family", choices=FAMILIES, action="append", help="only this metric family (repeatable)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return parser.parse_args(argv)


def _rate_cells(rate: Rate) -> list[str]:
    low, high = rate.interval()
    return [fmt(100 * rate.rate, 1), f"[{fmt(100 * low, 1)}, {fmt(100 * high, 1)}]"]


def _aa(args: argparse.Namespace, family: str) -> dict[str, Any]:
    scenario = Scenario(
        family=family, users_per_day=args.users_per_day, days=args.days, looks_per_day=args.looks_per_day,
        **BASELINES[family],
    )  # fmt: skip
    progress(f"A/A {family}: {args.experiments} experiments x {args.days * args.looks_per_day} looks ...")
    started = time.perf_counter()
    rates = aa_study(scenario, args.experiments, args.seed, args.alpha)
    progress(f"  done in {time.perf_counter() - started:.1f} s")
    margin = 2 * math.sqrt(args.alpha * (1 - args.alpha) / args.experiments)
    rows = []
    for name, rate in rates.items():
        looks = args.days * args.looks_per_day if "batch" in name else 1 if "once" in name else args.days
        verdict = "within" if rate.rate <= args.alpha + margin else "EXCEEDS"
        rows.append([name, looks, *_rate_cells(rate), verdict])
    print(f"\nA/A, {family}: false-positive rate (%), alpha {args.alpha:g}, {args.experiments} experiments")
    bound = f"<= alpha + 2 MC se ({100 * (args.alpha + margin):.2f}%)"
    print(table(["test", "looks", "FPR %", "95% MC interval", bound], rows))
    return {name: {"rate": r.rate, "interval": r.interval()} for name, r in rates.items()}


def _power(args: argparse.Namespace, family: str) -> dict[str, Any]:
    scenario = Scenario(
        family=family, effect=MDES[family], days=args.power_days, looks_per_day=args.looks_per_day,
        **BASELINES[family],
    )  # fmt: skip
    progress(f"power {family}: planning for {args.power_days} days, {args.experiments} experiments ...")
    started = time.perf_counter()
    study = power_study(scenario, args.experiments, args.seed, args.alpha)
    progress(f"  done in {time.perf_counter() - started:.1f} s")
    planned = study.scenario.users_per_day * study.scenario.days
    print(
        f"\npower, {family}: effect = MDE {MDES[family]:g}; planned {planned:,} users per arm"
        f" ({study.scenario.users_per_day:,}/day for {args.power_days} days, inflation {study.inflation:.3f});"
        f" design power {100 * study.design_power:.1f}%"
    )
    rows = [[name, *_rate_cells(row.decided), fmt(row.mean_days)] for name, row in study.rows.items()]
    print(table(["test", f"decided in {args.power_days} d %", "95% MC interval", "mean days"], rows))
    return {
        "planned_users_per_arm": planned,
        "inflation": study.inflation,
        "design_power": study.design_power,
        "rows": {n: {"decided": r.decided.rate, "mean_days": r.mean_days} for n, r in study.rows.items()},
    }


def _srm(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[list[object]] = []
    out: dict[str, Any] = {}
    users_per_look = 2 * args.users_per_day // args.looks_per_day
    looks = args.days * args.looks_per_day
    progress(f"SRM: {args.experiments} experiments x {looks} checks ...")
    for alpha in (args.alpha, SampleRatioTest((1, 1)).alpha):
        for share in SRM_SPLITS:
            test = SampleRatioTest((1, 1), alpha=alpha)
            rate, users = srm_study(
                test, share=share, users_per_look=users_per_look, looks=looks,
                experiments=args.experiments, seed=args.seed,
            )  # fmt: skip
            split = f"{100 * share:.0f}/{100 * (1 - share):.0f}"
            rows.append([f"{split}, alpha {alpha:g}", *_rate_cells(rate), fmt(users, 0)])
            out[f"{split} alpha {alpha:g}"] = {"rate": rate.rate, "mean_assignments": users}
    print(
        f"\nSRM (Dirichlet-multinomial, concentration 100) on a planned 50/50, checked every {users_per_look:,}"
        f" assignments for {looks * users_per_look:,}: share of experiments alarmed"
    )
    print(table(["true split", "alarmed %", "95% MC interval", "mean assignments to alarm"], rows))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    print_environment({"scipy": scipy.__version__})
    families = args.family or list(FAMILIES)
    started = time.perf_counter()
    aa = {family: _aa(args, family) for family in families}
    power = {family: _power(args, family) for family in families}
    document = {"aa": aa, "power": power, "srm": _srm(args)}
    progress(f"done in {time.perf_counter() - started:.1f} s")
    if args.json:
        write_json(args.json, args, document)


if __name__ == "__main__":
    main()
