"""Per-user bandits with a population prior over every population family and several seeds, in-process
(``rewardloop.demo.offline``: the shard's decision path without the service), next to the baselines
of the same populations: a uniformly random item, the population's single best item served to
everyone, and the bound of a policy that knows the true taste groups (``simulator.families``).

Per family and algorithm: veterans' click rate over all their requests as a multiple of random and
of the best item; newcomers' (users arriving at a population prior the veterans taught) at their
1st request and at requests 4-6 as a multiple of the best item, next to the group bound there.
Mean over seeds, with the minimum in brackets.

    .venv/bin/python bench/families.py --seeds 5
    .venv/bin/python bench/families.py --seeds 3 --family latent_groups --algorithm ucb1 --strength 10
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rewardloop.demo.offline import Run, run_family
from rewardloop.learning.bandits import UCB1, EpsilonGreedy, PolicyConfig, Thompson
from rewardloop.learning.surface import ColdStart
from rewardloop.simulator.families import FAMILIES

ALGORITHMS: dict[str, PolicyConfig] = {
    "thompson": Thompson(),
    "ucb1": UCB1(),
    "epsilon_greedy": EpsilonGreedy(),
    "ucb1 (textbook)": UCB1(c=2**0.5, tuned=False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1 per family")
    parser.add_argument("--family", choices=sorted(FAMILIES), action="append", help="only this family (repeatable)")
    parser.add_argument("--algorithm", choices=sorted(ALGORITHMS), action="append", help="only this one (repeatable)")
    parser.add_argument(
        "--strength",
        type=float,
        default=ColdStart().prior_strength,
        help="prior strength (default: the one used before segments are fitted)",
    )
    parser.add_argument(
        "--segments", action="store_true", help="segment priors (learning.segments), not the population's"
    )
    parser.add_argument(
        "--explore-first", action="store_true", help="explore from a user's first request (ColdStart.explore_first)"
    )
    parser.add_argument(
        "--selected-segments",
        action="store_true",
        help="with --segments: serve priors from the selected segments, not the finer mixture (as before 2026-11-30)",
    )
    args = parser.parse_args()
    served = "the selected segments" if args.selected_segments else "the prior mixture"
    population = f"population prior, strength {args.strength:g}"
    prior = f"priors from {served} (estimated strength)" if args.segments else population
    first = "explore from the first request" if args.explore_first else "first request as configured by default"
    print(f"{prior}; {first}; seeds 0-{args.seeds - 1}; mean (min) over seeds")
    header = f"{'family':<17} {'algorithm':<16} {'x random':>13} {'x best item':>13} {'new@1 x best':>13}"
    print(f"{header} {'new@4-6 x best':>15} {'group bound':>11} {'s':>4}")
    for family in args.family or list(FAMILIES):
        for name in args.algorithm or list(ALGORITHMS):
            started = time.perf_counter()
            runs = [
                run_family(
                    FAMILIES[family],
                    ALGORITHMS[name],
                    args.strength,
                    seed,
                    segments=args.segments,
                    explore_first=True if args.explore_first else None,
                    prior_mixture=not args.selected_segments,
                )
                for seed in range(args.seeds)
            ]
            figures = np.array([_figures(r) for r in runs])
            means, lows = figures.mean(axis=0)[:4], figures.min(axis=0)[:4]
            cells = " ".join(f"{m:>6.2f} ({lo:.2f})" for m, lo in zip(means, lows, strict=True))
            seconds = time.perf_counter() - started
            print(f"{family:<17} {name:<16} {cells:>57} {figures[:, 4].mean():>11.2f} {seconds:>4.0f}", flush=True)


def _figures(run: Run) -> tuple[float, float, float, float, float]:
    best = run.newcomer_best  # after a taste shift (drift), the best item of the new tastes
    newcomers = run.newcomers(1, 1) / best, run.newcomers(4, 6) / best
    return run.lift, run.over_best_item, *newcomers, run.bound_at(4, 6) / best


if __name__ == "__main__":
    main()
