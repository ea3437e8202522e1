"""Drive an agent surface with simulated sessions (``simulator/agent_env.py``), through the service.

Each simulated user runs sessions one after another: every turn it asks Recommend for an action
(its observation as the request context), answers with the simulator's reward as a completion
signal (clipped to [0, 1]) about that decision, and when the simulated user leaves, sends
``SESSION_END`` about the last decision. The return of a session is the simulator's own, so it is
comparable with the exact benchmarks (``SessionMDP.benchmarks``).

    python -m rewardloop.demo.agent_driver --target localhost:50051 --surface assistant --sessions 2000

A backend is the service through the SDK (``SdkBackend``) or a shard in-process (tests).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from rewardloop.client import AsyncClient, Signal
from rewardloop.simulator.agent_env import ACTIONS, AgentSessionEnv, SessionMDP

CONTEXT = ("persona_0", "persona_1", "persona_2", "ambiguous", "sat_low", "sat_mid", "sat_high")
"""The simulator's observation as request features (its order)."""


def surface_spec(**agent: object) -> dict[str, object]:
    """The config table of an agent surface the simulator can drive (``agent``: its ``agent`` keys)."""
    return {"kind": "agent", "items": list(ACTIONS), "features": {"numeric": list(CONTEXT)}, "agent": dict(agent)}


class Backend(Protocol):
    async def decide(self, user: str, context: dict[str, float]) -> tuple[str, str, str]:
        """(decision id, action, model version)."""
        ...

    async def report(self, user: str, decision_id: str, action: str, signal: Signal, value: float) -> None: ...


class SdkBackend:
    """The service through the SDK. ``pace``: the least time between two calls of one user. The
    service flags feedback from a user acting faster than a person can (20 actions a second, 600
    a minute, by default) and learns nothing from it; a service configured without that limit can
    be driven at full speed (``pace=0``)."""

    def __init__(self, client: AsyncClient, surface: str, pace: float = 0.0) -> None:
        self.client = client
        self.surface = surface
        self.pace = pace
        self.flagged = 0
        self._last: dict[str, float] = {}

    async def _paced(self, user: str) -> None:
        if self.pace:
            loop = asyncio.get_running_loop()
            wait = self._last.get(user, 0.0) + self.pace - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last[user] = loop.time()

    async def decide(self, user: str, context: dict[str, float]) -> tuple[str, str, str]:
        await self._paced(user)
        rec = await self.client.recommend(user, self.surface, context=context)
        return rec.decision_id, rec.items[0].item_id, rec.model_version

    async def report(self, user: str, decision_id: str, action: str, signal: Signal, value: float) -> None:
        await self._paced(user)
        result = await self.client.record(user, action, signal, value, decision_id=decision_id)
        self.flagged += bool(result.flag)


@dataclass
class SessionResult:
    user: str
    ret: float
    turns: int
    versions: list[str] = field(default_factory=list)


async def run_session(backend: Backend, env: AgentSessionEnv, user: str, seed: int) -> SessionResult:
    obs, _ = env.reset(seed=seed)
    result = SessionResult(user, 0.0, 0)
    while True:
        decision_id, action, version = await backend.decide(user, dict(zip(CONTEXT, obs.tolist(), strict=True)))
        obs, reward, terminated, truncated, _ = env.step(ACTIONS.index(action))
        result.ret += reward
        result.turns += 1
        result.versions.append(version)
        await backend.report(user, decision_id, action, Signal.COMPLETION, min(max(reward, 0.0), 1.0))
        if terminated or truncated:
            await backend.report(user, decision_id, action, Signal.SESSION_END, 1.0)
            return result


async def drive(backend: Backend, sessions: int, users: int = 16, seed: int = 0) -> list[SessionResult]:
    """``sessions`` sessions by ``users`` concurrent users (each runs its share in order), in the
    order they finished."""
    counter = itertools.count()
    results: list[SessionResult] = []

    async def user_loop(k: int) -> None:
        env = AgentSessionEnv()
        while (n := next(counter)) < sessions:
            results.append(await run_session(backend, env, f"agent-user-{seed}-{k}", seed * 1_000_003 + n))

    await asyncio.gather(*(user_loop(k) for k in range(users)))
    return results


def version_number(model_version: str) -> int:
    """The published version in an agent decision's model version (``<fingerprint>.v<k>``)."""
    return int(model_version.rsplit(".v", 1)[1])


def by_version(results: Sequence[SessionResult]) -> dict[int, tuple[float, int]]:
    """Mean return and count of sessions per the version that made their first decision. (Not
    "sessions decided by one version": while the trainer publishes often, the long sessions, the
    good ones, span versions, and leaving them out would bias every version low.)"""
    returns: dict[int, list[float]] = defaultdict(list)
    for r in results:
        returns[version_number(r.versions[0])].append(r.ret)
    return {v: (float(np.mean(x)), len(x)) for v, x in sorted(returns.items())}


async def _main(args: argparse.Namespace) -> None:
    bench = SessionMDP().benchmarks()
    async with AsyncClient(args.target, default_timeout=10) as client:
        backend = SdkBackend(client, args.surface, pace=args.pace)
        done = 0
        while done < args.sessions:
            chunk = min(args.report_every, args.sessions - done)
            results = await drive(backend, chunk, args.users, seed=args.seed + done)
            done += chunk
            versions = sorted({version_number(v) for r in results for v in r.versions})
            mean = float(np.mean([r.ret for r in results]))
            print(
                f"sessions {done:6d}  mean return {mean:.3f} ({mean / bench['optimal']:.0%} of optimal)  "
                f"versions {versions[0]}..{versions[-1]}  flagged events {backend.flagged}",
                flush=True,
            )
    print("benchmarks: " + ", ".join(f"{k} {v:.3f}" for k, v in bench.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="localhost:50051")
    parser.add_argument("--surface", default="assistant")
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument(
        "--pace", type=float, default=0.12, help="least seconds between two calls of one user (0: no pause)"
    )
    parser.add_argument("--report-every", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
