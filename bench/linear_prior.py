"""The linear policies' prior strength: hand-set values next to the one learned from the users
(``learning.segments.linear_prior``), in-process, with the shard's combine and select.

Per seed, a contextual population (``Population(n_items=10, taste_dim=4, taste_strength=2.0,
base_ctr=0.03)``, the contextual learning tests' recipe; ``--individuality`` moves users away from
their group) of ``--users`` users makes ``--rounds`` requests each, context = [1, the user's
observable features, a fresh request context]. Every user has their own per-arm ridge state,
shrunk toward the population's (the merge of everyone's, refreshed every round) at each strength;
"learned" re-estimates it every round from all users' states, as the fitter does from its sample.
Printed: the expected click rate over the last 10 rounds, and the learned strength (median of the
last 5 estimates).

    .venv/bin/python bench/linear_prior.py                         # lin_ts and linucb, seeds 1-3
    .venv/bin/python bench/linear_prior.py --algorithm lin_ts --individuality 1.0
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from rewardloop.learning.bandits import LinTS, LinUCB, PolicyConfig, make_policy
from rewardloop.learning.segments.linear_prior import linear_strength
from rewardloop.simulator.population import Population

ALGORITHMS: dict[str, PolicyConfig] = {"lin_ts": LinTS(), "linucb": LinUCB()}
STRENGTHS = (2.0, 20.0, 200.0, 2000.0)
TAIL = 10


def run(
    config: PolicyConfig, strength: float | None, seed: int, users: int, rounds: int, individuality: float
) -> tuple[float, float]:
    """(expected CTR over the last TAIL rounds, the strength served at the end); None: learned."""
    population = Population(
        n_users=users, n_items=10, seed=seed, taste_dim=4, taste_strength=2.0, base_ctr=0.03,
        individuality=individuality,
    )  # fmt: skip
    features = [population.user_features(u) for u in range(users)]
    policy = make_policy(config, n_arms=population.n_items, context_dim=1 + len(features[0]) + population.n_context)
    states = [policy.new_state() for _ in range(users)]
    merged = policy.new_state()
    rng = np.random.default_rng([seed, 9])
    served, learned, tail = strength or 2.0, [], []
    for t in range(rounds):
        prior = merged.copy()
        if strength is None and t > 0:
            grams = np.array([s.arrays["gram"] for s in states])
            xrs = np.array([s.arrays["xr"] for s in states])
            estimate = linear_strength(grams, xrs)
            if estimate is not None:
                served = estimate
                learned.append(estimate)
        total = 0.0
        for u in range(users):
            request = population.draw_context(u, rng)
            x = np.concatenate(([1.0], features[u], request))
            state = states[u]
            effective = policy.combine(state, prior, served) if prior.n_updates else state
            arm = policy.select(effective, np.arange(population.n_items), 1, rng, context=x)[0].arm
            p = float(population.click_probabilities(u, request)[arm])
            reward = float(rng.random() < p)
            policy.update(state, arm, reward, context=x)
            policy.update(merged, arm, reward, context=x)
            total += p
        if t >= rounds - TAIL:
            tail.append(total / users)
    return float(np.mean(tail)), statistics.median(learned[-5:]) if learned else served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithm", choices=sorted(ALGORITHMS), action="append", help="only this one (repeatable)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 1 .. N")
    parser.add_argument("--users", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--individuality", type=float, default=0.3, help="Population.individuality")
    args = parser.parse_args()
    print(f"expected CTR over the last {TAIL} of {args.rounds} rounds, {args.users} users, 10 items, "
          f"individuality {args.individuality}")  # fmt: skip
    header = " ".join(f"{f's={s:g}':>8}" for s in STRENGTHS)
    print(f"{'algorithm':<8} {'seed':>4} {header} {'learned':>8} {'(s)':>7} {'s':>4}")
    for name in args.algorithm or list(ALGORITHMS):
        for seed in range(1, args.seeds + 1):
            started = time.perf_counter()
            fixed = [run(ALGORITHMS[name], s, seed, args.users, args.rounds, args.individuality)[0] for s in STRENGTHS]
            ctr, strength = run(ALGORITHMS[name], None, seed, args.users, args.rounds, args.individuality)
            cells = " ".join(f"{c:>8.3f}" for c in fixed)
            seconds = time.perf_counter() - started
            print(f"{name:<8} {seed:>4} {cells} {ctr:>8.3f} {strength:>7.0f} {seconds:>4.0f}", flush=True)


if __name__ == "__main__":
    main()
