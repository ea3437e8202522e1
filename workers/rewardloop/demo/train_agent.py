"""`make train-agent`: train an agent policy on the agent-session simulator, with a learning curve.

Trains tabular Q-learning or DQN (default configuration unless flags say otherwise) for
``--episodes`` simulated sessions, showing a progress bar. Every ``--eval-every`` sessions the
greedy policy is valued exactly on the simulator's MDP. Writes, under ``--out``:

* ``learning-curve.png``: the greedy policy's exact return and the sessions' moving average, next to
  the optimum (value iteration), the best one-step policy and the best fixed action;
* ``checkpoint.zip``: the learner, resumable (``--resume`` continues from it exactly);
* ``curve.json``: the numbers behind the plot.

    .venv/bin/python -m rewardloop.demo.train_agent --algorithm dqn --episodes 1000 --seed 0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from rewardloop.learning.agents.checkpoint import dumps, loads
from rewardloop.learning.agents.dqn import DQN, DQNConfig
from rewardloop.learning.agents.tabular import QLearning, QLearningConfig
from rewardloop.learning.agents.training import train
from rewardloop.simulator.agent_env import AgentSessionEnv, SessionMDP


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="train-agent", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--algorithm", choices=("q_learning", "dqn"), default="dqn")
    parser.add_argument("--episodes", type=int, default=1_000, help="sessions to train on (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=50, help="sessions between exact evaluations")
    parser.add_argument("--out", default="var/train-agent", help="directory for the PNG, curve and checkpoint")
    parser.add_argument("--resume", help="a checkpoint.zip to continue from")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.eval_every < 1:
        parser.error("--episodes and --eval-every must be >= 1")
    return args


def greedy_value(agent: DQN | QLearning, mdp: SessionMDP) -> float:
    """The exact return of the learner's greedy policy."""
    policy = agent.greedy_policy() if isinstance(agent, QLearning) else agent.greedy_actions(mdp.observations)
    return mdp.start_value(policy)


def run(args: argparse.Namespace) -> dict[str, Any]:
    env = AgentSessionEnv(seed=args.seed)
    mdp = env.mdp
    agent: DQN | QLearning
    if args.resume:
        agent, extra = loads(Path(args.resume).read_bytes())
        done_before = int(extra.get("episodes", 0))
        # A resumed run continues the simulator's stream where it stopped.
        env.np_random.bit_generator.state = extra["env_rng"]
    elif args.algorithm == "dqn":
        import torch

        torch.set_num_threads(1)
        agent, done_before = DQN(DQNConfig(mdp.observation_size, mdp.n_actions, seed=args.seed)), 0
    else:
        agent, done_before = QLearning(QLearningConfig(mdp.n_states, mdp.n_actions, seed=args.seed)), 0
    encode = mdp.state_of if isinstance(agent, QLearning) else None
    curve: list[tuple[int, float]] = []
    returns: list[float] = []
    bar = tqdm(total=args.episodes, unit="session", disable=args.quiet, desc=type(agent).__name__)
    while len(returns) < args.episodes:
        chunk = min(args.eval_every, args.episodes - len(returns))
        returns += train(env, agent, chunk, encode=encode)
        value = greedy_value(agent, mdp)
        curve.append((done_before + len(returns), value))
        bar.update(chunk)
        bar.set_postfix(greedy_return=f"{value:.3f}")
    bar.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    extra = {"episodes": done_before + len(returns), "env_rng": env.np_random.bit_generator.state}
    (out / "checkpoint.zip").write_bytes(dumps(agent, extra=extra))
    marks = mdp.benchmarks()
    result = {
        "algorithm": type(agent).__name__,
        "seed": args.seed,
        "benchmarks": marks,
        "curve": curve,
        "returns": returns,
    }
    (out / "curve.json").write_text(json.dumps(result))
    plot(result, done_before, out / "learning-curve.png")
    return result


def plot(result: dict[str, Any], start: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    returns = np.asarray(result["returns"])
    window = max(1, min(50, len(returns) // 10))
    moving = np.convolve(returns, np.ones(window) / window, mode="valid")
    ax.plot(
        start + np.arange(window, len(returns) + 1),
        moving,
        color="0.7",
        label=f"session return ({window}-session mean)",
    )
    x, y = zip(*result["curve"], strict=True)
    ax.plot(x, y, color="C0", lw=2, label="greedy policy, exact return")
    for (name, value), style in zip(result["benchmarks"].items(), ("-", "--", ":"), strict=True):
        ax.axhline(value, color="k", ls=style, lw=1, label=f"{name} {value:.2f}")
    ax.set_xlabel("sessions")
    ax.set_ylabel("return per session")
    ax.set_title(f"{result['algorithm']} on the agent-session simulator (seed {result['seed']})")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    marks = result["benchmarks"]
    final = result["curve"][-1][1]
    print(
        f"{result['algorithm']}, seed {args.seed}: greedy policy {final:.3f} per session after {result['curve'][-1][0]}"
    )
    for name, value in marks.items():
        print(f"  {name:18s} {value:.3f}  (learned: {final / value:.2f}x)")
    print(f"wrote {args.out}/learning-curve.png, curve.json, checkpoint.zip")


if __name__ == "__main__":
    main()
