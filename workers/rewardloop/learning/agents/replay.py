"""The experience-replay buffer: a preallocated numpy ring (Stable-Baselines3's ``ReplayBuffer`` shape).

Its memory is fixed at construction (:attr:`ReplayBuffer.nbytes`); once full, the oldest
transition is overwritten. ``sample`` draws uniformly with the caller's generator and returns a
typed :class:`ReplaySample`. ``state``/``from_state`` give the arrays a checkpoint stores, so a
resumed learner samples exactly what an uninterrupted one would have.

>>> buffer = ReplayBuffer(capacity=3, observation_size=2)
>>> for i in range(4):
...     buffer.add(np.full(2, i), action=i % 2, reward=float(i), next_observation=np.full(2, i + 1), done=i == 3)
>>> len(buffer), buffer.full, buffer.pos
(3, True, 1)
>>> sorted(buffer.rewards[: len(buffer)].tolist())
[1.0, 2.0, 3.0]
>>> batch = buffer.sample(2, np.random.default_rng(0))
>>> batch.observations.shape, batch.actions.dtype, batch.dones.dtype
((2, 2), dtype('int64'), dtype('float32'))
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from rewardloop.learning.params import int_in_range

F32 = NDArray[np.float32]


class ReplaySample(NamedTuple):
    observations: F32
    actions: NDArray[np.int64]
    rewards: F32
    next_observations: F32
    dones: F32
    """1.0 where the episode ended at this transition (no bootstrap), else 0.0."""


class ReplayBuffer:
    """A ring of ``capacity`` transitions with observations of ``observation_size`` floats."""

    def __init__(self, capacity: int, observation_size: int) -> None:
        self.capacity = int_in_range("buffer_size", capacity, 1, 100_000_000)
        self.observation_size = int_in_range("observation_size", observation_size, 1, 100_000)
        self.observations = np.zeros((capacity, observation_size), dtype=np.float32)
        self.next_observations = np.zeros((capacity, observation_size), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.dones = np.zeros(capacity, dtype=np.float32)
        self.pos = 0
        self.full = False

    def __len__(self) -> int:
        return self.capacity if self.full else self.pos

    @property
    def nbytes(self) -> int:
        """The buffer's memory, fixed from construction."""
        return sum(a.nbytes for a in self._arrays().values())

    def add(
        self,
        observation: NDArray[np.floating],
        action: int,
        reward: float,
        next_observation: NDArray[np.floating],
        done: bool,
    ) -> None:
        i = self.pos
        self.observations[i] = observation
        self.next_observations[i] = next_observation
        self.actions[i] = action
        self.rewards[i] = reward
        self.dones[i] = float(done)
        self.pos = (i + 1) % self.capacity
        self.full = self.full or self.pos == 0

    def sample(self, batch_size: int, rng: np.random.Generator) -> ReplaySample:
        if len(self) == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, len(self), size=batch_size)
        return ReplaySample(
            self.observations[idx], self.actions[idx], self.rewards[idx], self.next_observations[idx], self.dones[idx]
        )

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "observations": self.observations,
            "next_observations": self.next_observations,
            "actions": self.actions,
            "rewards": self.rewards,
            "dones": self.dones,
        }

    def state(self) -> dict[str, np.ndarray]:
        """The filled part of the ring and its position, for a checkpoint."""
        n = len(self)
        arrays = {name: a[:n] for name, a in self._arrays().items()}
        return {**arrays, "pos": np.array(self.pos), "full": np.array(self.full)}

    @classmethod
    def from_state(cls, capacity: int, state: dict[str, np.ndarray]) -> ReplayBuffer:
        observations = state["observations"]
        buffer = cls(capacity, observations.shape[1])
        n = observations.shape[0]
        if n > capacity:
            raise ValueError(f"a checkpoint of {n} transitions does not fit a buffer of {capacity}")
        for name, array in buffer._arrays().items():
            array[:n] = state[name]
        buffer.pos = int(state["pos"])
        buffer.full = bool(state["full"])
        return buffer
