"""The learners' configs, torch-free: what a service's config parser and the front may import.

``DQNConfig`` (``dqn.py`` trains with it) and the dict form both learners' configs take in
checkpoints, the trainer and the replicas (``config_to_dict`` / ``config_from_dict``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from rewardloop.learning.agents.exploration import (
    EpsilonGreedy,
    Exploration,
    exploration_from_dict,
    exploration_to_dict,
)
from rewardloop.learning.agents.tabular import QLearningConfig
from rewardloop.learning.params import ConfigError, boolean, discount, in_interval, int_in_range, positive


@dataclass(frozen=True)
class DQNConfig:
    """Hyper-parameters of DQN; the defaults are the ones measured on the agent-session simulator."""

    observation_size: int
    """Length of the state vector."""
    n_actions: int
    hidden: tuple[int, ...] = (64, 64)
    """Widths of the Q-network's hidden layers (ReLU)."""
    learning_rate: float = 1e-3
    """Adam's step size."""
    gamma: float = 0.9
    """Discount per turn."""
    buffer_size: int = 50_000
    """Transitions the replay ring keeps (its memory is fixed: ``ReplayBuffer.nbytes``)."""
    batch_size: int = 64
    learning_starts: int = 256
    """Transitions before the first gradient step."""
    train_frequency: int = 1
    """A gradient step every this many transitions..."""
    gradient_steps: int = 1
    """...of this many steps."""
    target_update_interval: int = 250
    """Gradient steps between target-network updates."""
    tau: float = 1.0
    """1: copy the online network; less: Polyak-average toward it."""
    double: bool = True
    """Double DQN's target (False: the original DQN's)."""
    max_grad_norm: float = 10.0
    exploration: Exploration = field(default_factory=EpsilonGreedy)
    seed: int = 0

    def __post_init__(self) -> None:
        int_in_range("observation_size", self.observation_size, 1, 100_000)
        int_in_range("n_actions", self.n_actions, 1, 10_000)
        if not self.hidden or len(self.hidden) > 8:
            raise ConfigError(f"hidden must list 1 to 8 layer widths, got {list(self.hidden)}")
        for width in self.hidden:
            int_in_range("hidden", width, 1, 4096)
        positive("learning_rate", self.learning_rate)
        discount("gamma", self.gamma)
        int_in_range("buffer_size", self.buffer_size, 1, 100_000_000)
        int_in_range("batch_size", self.batch_size, 1, 65_536)
        int_in_range("learning_starts", self.learning_starts, 0, 10**12)
        int_in_range("train_frequency", self.train_frequency, 1, 10**6)
        int_in_range("gradient_steps", self.gradient_steps, 1, 10**4)
        int_in_range("target_update_interval", self.target_update_interval, 1, 10**9)
        in_interval("tau", self.tau, 0.0, 1.0, open_low=True)
        boolean("double", self.double)
        positive("max_grad_norm", self.max_grad_norm)
        int_in_range("seed", self.seed, 0, 2**63 - 1)


def config_to_dict(config: DQNConfig | QLearningConfig) -> dict[str, Any]:
    out = asdict(config)
    out["exploration"] = exploration_to_dict(config.exploration)
    if "hidden" in out:
        out["hidden"] = list(out["hidden"])
    return out


def config_from_dict(algorithm: str, spec: dict[str, Any]) -> DQNConfig | QLearningConfig:
    kind = DQNConfig if algorithm == "dqn" else QLearningConfig
    spec = {k: v for k, v in spec.items() if k in {f.name for f in fields(kind)}}
    spec["exploration"] = exploration_from_dict(spec.get("exploration", {}))
    if "hidden" in spec:
        spec["hidden"] = tuple(spec["hidden"])
    return kind(**spec)
