"""`python -m rewardloop.workers.evaluation`: off-policy evaluation of a candidate from the logs.

    python -m rewardloop.workers.evaluation --redis-url redis://127.0.0.1:6379/0 \\
        --surface home_feed --algorithm ucb1 --param c=0.5

``evaluate_from_logs`` is the whole job (read the logs, evaluate the candidate); the Admin
service runs the same function as a Ray task, so the command line and the RPC cannot drift apart.
"""

from __future__ import annotations

import argparse
import os

import redis

from rewardloop.learning.bandits import PolicyConfig, config_from_dict
from rewardloop.learning.evaluation.candidate import CandidateEvaluation, candidate_params, evaluate_candidate
from rewardloop.learning.surface import SurfaceConfig
from rewardloop.state.logged_decisions import read_logged_decisions
from rewardloop.workers.config import ServiceConfig


def evaluate_from_logs(
    redis_url: str, surface: SurfaceConfig, candidate: PolicyConfig, max_decisions: int, train_fraction: float,
    confidence: float,
) -> CandidateEvaluation:  # fmt: skip
    """Read up to ``max_decisions`` of ``surface``'s logged decisions and evaluate ``candidate`` on them."""
    client = redis.Redis.from_url(redis_url)
    try:
        logs = read_logged_decisions(client, surface, max_decisions)
    finally:
        client.close()
    return evaluate_candidate(logs, surface, candidate, train_fraction=train_fraction, confidence=confidence)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m rewardloop.workers.evaluation", description=__doc__)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"), required=not os.environ.get("REDIS_URL"))
    parser.add_argument("--config", default=os.environ.get("REWARDLOOP_CONFIG"))
    parser.add_argument("--surface", required=True)
    parser.add_argument("--algorithm", help="candidate algorithm (default: the surface's own)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--max-decisions", type=int, default=100_000)
    parser.add_argument("--train-fraction", type=float, default=0.5)
    parser.add_argument("--confidence", type=float, default=0.95)
    args = parser.parse_args()

    surface = ServiceConfig.load(args.config).surfaces.get(args.surface)
    if surface is None:
        parser.error(f"--surface: {args.surface!r} is not configured")
    params = candidate_params({name: float(value) for name, _, value in (p.partition("=") for p in args.param)})
    candidate = config_from_dict(args.algorithm, params) if args.algorithm else surface.policy_config
    print(f"reading the logs of {surface.name!r} ...", flush=True)
    result = evaluate_from_logs(
        args.redis_url, surface, candidate, args.max_decisions, args.train_fraction, args.confidence
    )
    print(
        f"candidate {result.algorithm}: trained on {result.train_decisions} decisions, "
        f"evaluated on {result.eval_decisions}; deployed policy's value there: {result.logged_value:.4f}"
    )
    for estimate in result.estimates.values():
        print(f"  {estimate}")


if __name__ == "__main__":
    main()
