"""Agent learners: what a DQN gradient step costs next to a bare torch loop, and how they learn.

1. Gradient steps/s, batch 64, the default Q-network (7 -> 64 -> 64 -> 5): ``DQN.train_step``
   (a minibatch from the replay ring, Double DQN's target, Huber loss, clipping, Adam, the target
   schedule) next to a bare torch loop doing the same update on the same networks with tensors
   made once (the floor: what the update costs without the replay and the bookkeeping). Blocks
   alternate; medians of the blocks. Target: >= 0.8x the floor.
2. Forward passes of the served network (``DQN.q_values``) at batch 1 and 64, next to the bare
   ``module(x)`` under ``no_grad``.
3. ``--learning``: greedy return after 1,000 sessions on the agent-session simulator, share of the
   optimum (exact, by value iteration), per seed: tabular Q-learning with replay (the default),
   without replay (online, step size n^-0.7), Double DQN (the default) and DQN. With ``--sb3`` as
   well: Stable-Baselines3's DQN (the dev extra; the original DQN's target, Huber loss) for the same
   1,000 sessions (a callback stops it), hyper-parameters matched to ``DQNConfig``'s defaults, its
   greedy policy valued the same way. Each row: seconds per run, environment steps per run.

4. ``--push``: the weight push on Ray Serve (2 replicas, embedded Redis): for each of ``--versions``
   published versions, how long until the first answer and until 64 answers in a row (32 in
   flight) come from it, and whether any answer was not exactly one version's forward pass.

    .venv/bin/python bench/agents.py                       # ~30 s
    .venv/bin/python bench/agents.py --learning --seeds 10 # + ~6 min
    .venv/bin/python bench/agents.py --learning --sb3      # + Stable-Baselines3's DQN
    .venv/bin/python bench/agents.py --push                # + ~1 min
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from rewardloop.demo.train_agent import greedy_value
from rewardloop.learning.agents.dqn import DQN, DQNConfig, build_network
from rewardloop.learning.agents.exploration import EpsilonGreedy
from rewardloop.learning.agents.tabular import QLearning, QLearningConfig
from rewardloop.learning.agents.training import train
from rewardloop.simulator.agent_env import AgentSessionEnv, SessionMDP


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500, help="gradient steps per block")
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--learning", action="store_true", help="also the learning table (minutes)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--sb3", action="store_true", help="with --learning: also Stable-Baselines3's DQN at the same budget"
    )
    parser.add_argument("--push", action="store_true", help="also the weight push on Ray Serve")
    parser.add_argument("--versions", type=int, default=10)
    args = parser.parse_args()
    if args.sb3 and not args.learning:
        parser.error("--sb3 adds rows to the learning table: use it with --learning")
    if args.sb3:
        try:
            import stable_baselines3  # noqa: F401
        except ImportError:
            parser.error("--sb3 needs Stable-Baselines3: .venv/bin/pip install stable-baselines3==2.9.2")
    return args


def filled_dqn(observation_size: int = 7, n_actions: int = 5) -> DQN:
    agent = DQN(DQNConfig(observation_size, n_actions, learning_starts=10**9))
    rng = np.random.default_rng(0)
    for _ in range(5_000):
        obs = rng.random(observation_size).astype(np.float32)
        agent.observe(obs, int(rng.integers(n_actions)), float(rng.random()), obs, bool(rng.random() < 0.2))
    return agent


def bare_loop(config: DQNConfig) -> Callable[[int], None]:
    """The floor: the same update (Double DQN's target, Huber loss, clipping, Adam) on the same
    networks, written inline CleanRL-style on tensors made once: no replay sampling, no
    conversions, no counters."""
    net, target_net = build_network(config, 1), build_network(config, 1)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    gen = torch.Generator().manual_seed(0)
    obs = torch.rand(config.batch_size, config.observation_size, generator=gen)
    next_obs = torch.rand(config.batch_size, config.observation_size, generator=gen)
    actions = torch.randint(0, config.n_actions, (config.batch_size, 1), generator=gen)
    rewards = torch.rand(config.batch_size, generator=gen)
    dones = (torch.rand(config.batch_size, generator=gen) < 0.2).float()

    def run(steps: int) -> None:
        for _ in range(steps):
            with torch.no_grad():
                next_actions = net(next_obs).argmax(dim=1, keepdim=True)
                next_q = target_net(next_obs).gather(1, next_actions).squeeze(1)
                td_target = rewards + config.gamma * next_q * (1.0 - dones)
            q = net(obs).gather(1, actions).squeeze(1)
            loss = torch.nn.functional.smooth_l1_loss(q, td_target)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.max_grad_norm)
            optimizer.step()

    return run


def rate(fn: Callable[[int], None], steps: int) -> float:
    start = time.perf_counter()
    fn(steps)
    return steps / (time.perf_counter() - start)


def gradient_steps(args: argparse.Namespace) -> None:
    agent = filled_dqn()
    floor = bare_loop(agent.config)

    def ours(steps: int) -> None:
        for _ in range(steps):
            agent.train_step()

    ours(50)
    floor(50)
    mine, bare = [], []
    for _ in range(args.blocks):
        mine.append(rate(ours, args.steps))
        bare.append(rate(floor, args.steps))
    m, b = statistics.median(mine), statistics.median(bare)
    print("1. gradient steps/s, batch 64, network 7-64-64-5 (median of blocks)")
    print(f"  bare torch loop         {b:8.0f}")
    print(f"  DQN.train_step          {m:8.0f}  {m / b:.2f}x  (target >= 0.80x)")


def forward_passes(args: argparse.Namespace) -> None:
    agent = filled_dqn()
    print("2. forward pass, microseconds (median of blocks)")
    for batch in (1, 64):
        x = np.random.default_rng(0).random((batch, 7)).astype(np.float32)
        tensor = torch.as_tensor(x)

        def served(n: int, x: np.ndarray = x) -> None:
            for _ in range(n):
                agent.q_values(x)

        def bare(n: int, t: torch.Tensor = tensor) -> None:
            with torch.no_grad():
                for _ in range(n):
                    agent.q_network(t)

        ours = statistics.median(1e6 / rate(served, 2_000) for _ in range(args.blocks))
        floor = statistics.median(1e6 / rate(bare, 2_000) for _ in range(args.blocks))
        print(f"  batch {batch:3d}: bare module {floor:6.1f}   DQN.q_values {ours:6.1f}  {ours / floor:.2f}x")


def learning(args: argparse.Namespace) -> None:
    mdp = SessionMDP()
    optimal = mdp.benchmarks()["optimal"]
    print(f"3. greedy return after 1,000 sessions / optimum ({optimal:.3f}); seeds 0-{args.seeds - 1}")
    variants: dict[str, Callable[[int], tuple[float, int]]] = {}

    def tabular(**kwargs: float) -> Callable[[int], tuple[float, int]]:
        def run(seed: int) -> tuple[float, int]:
            env = AgentSessionEnv(seed=seed)
            agent = QLearning(QLearningConfig(mdp.n_states, mdp.n_actions, seed=seed, **kwargs))  # type: ignore[arg-type]
            train(env, agent, 1_000, encode=mdp.state_of)
            return greedy_value(agent, mdp) / optimal, agent.transitions

        return run

    def dqn(double: bool) -> Callable[[int], tuple[float, int]]:
        def run(seed: int) -> tuple[float, int]:
            env = AgentSessionEnv(seed=seed)
            agent = DQN(DQNConfig(mdp.observation_size, mdp.n_actions, double=double, seed=seed))
            train(env, agent, 1_000)
            return greedy_value(agent, mdp) / optimal, agent.transitions

        return run

    def sb3(seed: int) -> tuple[float, int]:
        model = sb3_dqn(seed, 1_000)
        return greedy_value(SB3Greedy(model), mdp) / optimal, model.num_timesteps  # type: ignore[arg-type]

    variants["q_learning (replay 64)"] = tabular()
    variants["q_learning, online only"] = tabular(replay_ratio=0, learning_rate_power=0.7)
    variants["double dqn (default)"] = dqn(True)
    variants["dqn"] = dqn(False)
    if args.sb3:
        variants["sb3 dqn (2.9.2)"] = sb3
    for name, run in variants.items():
        runs, took = [], []
        for seed in range(args.seeds):
            start = time.perf_counter()
            runs.append(run(seed))
            took.append(time.perf_counter() - start)
        shares = [share for share, _ in runs]
        steps = np.mean([n for _, n in runs])
        cells = " ".join(f"{s:.3f}" for s in shares)
        print(
            f"  {name:24s} mean {np.mean(shares):.3f} min {min(shares):.3f}  [{cells}]  "
            f"{np.mean(took):.1f} s/seed  {steps:,.0f} steps/seed",
            flush=True,
        )
    if args.sb3:
        print(
            "  sb3 dqn: stopped after 1,000 sessions by StopTrainingOnMaxEpisodes (the same budget as ours);"
            " greedy = predict(deterministic=True) on every MDP state"
        )


class SB3Greedy:
    """A Stable-Baselines3 model seen as ``greedy_value`` sees a DQN: the greedy action of each state."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def greedy_actions(self, observations: np.ndarray) -> np.ndarray:
        actions, _ = self.model.predict(observations, deterministic=True)
        return np.asarray(actions, dtype=np.int64)


def sb3_dqn(seed: int, episodes: int) -> Any:
    """Stable-Baselines3's DQN trained on the simulator for ``episodes`` sessions, with ``DQNConfig``'s
    defaults (``learning/agents/config.py``) in SB3's terms.

    - Exploration: SB3 anneals epsilon over ``exploration_fraction`` of ``total_timesteps``;
      ``total_timesteps`` is only a cap here (``max_turns`` per session, never reached: the callback
      stops at ``episodes``), so the fraction is 4,000 / cap: epsilon 1.0 -> 0.05 over 4,000 steps.
    - Target network: SB3 copies it every ``target_update_interval`` environment steps, ours every
      that many gradient steps; with one gradient step per transition the period is the same (250),
      offset by ``learning_starts`` (SB3 copies at steps 500, 750, ...; ours after steps 505, 755, ...).
    - SB3 acts uniformly at random before ``learning_starts`` (ours: epsilon-greedy, epsilon ~1) and
      trains from transition 257 (ours: 256). Its target is the original DQN's (no Double DQN).
    """
    from stable_baselines3 import DQN as SB3DQN
    from stable_baselines3.common.callbacks import StopTrainingOnMaxEpisodes

    defaults = DQNConfig(7, 5)
    exploration = defaults.exploration
    assert isinstance(exploration, EpsilonGreedy)
    env = AgentSessionEnv(seed=seed)
    cap = env.max_turns * episodes
    model = SB3DQN(
        "MlpPolicy",
        env,
        learning_rate=defaults.learning_rate,
        buffer_size=defaults.buffer_size,
        learning_starts=defaults.learning_starts,
        batch_size=defaults.batch_size,
        tau=defaults.tau,
        gamma=defaults.gamma,
        train_freq=defaults.train_frequency,
        gradient_steps=defaults.gradient_steps,
        target_update_interval=defaults.target_update_interval,
        exploration_fraction=exploration.decay_steps / cap,
        exploration_initial_eps=exploration.start,
        exploration_final_eps=exploration.end,
        max_grad_norm=defaults.max_grad_norm,
        policy_kwargs={"net_arch": list(defaults.hidden)},
        seed=seed,
        device="cpu",
        verbose=0,
    )
    model.learn(total_timesteps=cap, callback=StopTrainingOnMaxEpisodes(max_episodes=episodes))
    return model


async def push(args: argparse.Namespace) -> None:
    import contextlib

    import redis
    from _cli import start_ray
    from ray import serve

    from rewardloop.learning.agents.checkpoint import config_to_dict
    from rewardloop.workers.policy_replicas import deployment
    from rewardloop.workers.redis_server import EmbeddedRedis
    from rewardloop.workers.trainer import policy_bytes, weights_key

    surface = "bench-push"
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(EmbeddedRedis())
        client = redis.Redis.from_url(server.url)
        start_ray(stack)
        serve.start(proxy_location="Disabled")
        stack.callback(serve.shutdown)
        agent = filled_dqn()
        app = deployment("bench-push", replicas=2).bind(server.url, surface, config_to_dict(agent.config))
        handle = serve.run(app, name="bench-push", route_prefix=None)
        states = np.random.default_rng(0).random((32, 7)).astype(np.float32)
        models: dict[int, np.ndarray] = {0: filled_dqn().q_values(states)}
        firsts, alls, wrong = [], [], 0
        for version in range(1, args.versions + 1):
            for _ in range(20):
                agent.train_step()
            models[version] = agent.q_values(states)
            published = time.perf_counter()
            client.hset(weights_key(surface), mapping={"version": version, "weights": policy_bytes(agent)})
            first, streak = None, 0
            while streak < 64:
                answers = await asyncio.gather(*(handle.q_values.remote(s.tolist()) for s in states))
                for row, (answered, q, _) in enumerate(answers):
                    if not np.allclose(q, models[answered][row], rtol=1e-5, atol=1e-6):
                        wrong += 1
                    if answered == version:
                        first = first or time.perf_counter() - published
                        streak += 1
                    else:
                        streak = 0
            firsts.append(first or 0.0)
            alls.append(time.perf_counter() - published)
        print(f"4. weight push, 2 replicas, {args.versions} versions, poll every 100 ms")
        for label, times in (("first answer from the new version", firsts), ("64 answers in a row from it", alls)):
            p50, worst = 1000 * statistics.median(times), 1000 * max(times)
            print(f"  {label:34s} p50 {p50:6.0f} ms  max {worst:6.0f} ms")
        print(f"  answers that were not exactly one version: {wrong}")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread")
    gradient_steps(args)
    forward_passes(args)
    if args.learning:
        learning(args)
    if args.push:
        asyncio.run(push(args))


if __name__ == "__main__":
    main()
