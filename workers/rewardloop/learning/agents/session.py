"""Session features of an agent surface: what a user's shard knows about the session so far.

A session is the user's run of decisions on one agent surface. It ends on an explicit end signal
or after ``idle_timeout_ms`` without a decision (the next decision then starts a new one). Its
features, all in [0, 1] so a network needs no scaling:

* ``turn``: decisions so far in the session, over ``max_turns`` (capped at 1);
* ``satisfaction``: an exponential average of the session's rewards (clipped to [0, 1]) with a
  half-life of ``satisfaction_half_life`` rewards, starting from 0.5 (one reward moves a new
  session's part of the way, not all of it);
* ``since_positive``: time since the last reward >= ``positive_threshold``, over the idle timeout
  (1 with none yet);
* ``share_<action>``: the share of the session's decisions that took each action.

>>> config = SessionConfig(idle_timeout_ms=60_000, max_turns=10)
>>> s = Session.start(now_ms=0, n_actions=3)
>>> s.decided(action=2, now_ms=1_000)
>>> s.rewarded(1.0, now_ms=2_000)
>>> s.features(config, now_ms=8_000).round(3).tolist()
[0.1, 0.603, 0.1, 0.0, 0.0, 1.0]
>>> s.expired(config, now_ms=1_000 + 60_000), Session.from_bytes(s.to_bytes()) == s
(True, True)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from rewardloop.learning.params import ConfigError, int_in_range, positive, unit_interval

FEATURES = ("turn", "satisfaction", "since_positive")
"""The fixed session features; ``share_<action>`` for each action follows them."""
_HEADER = struct.Struct("<BqqqIdI")  # version, started, last, last positive, turn, satisfaction, actions
_FORMAT = 1


@dataclass(frozen=True)
class SessionConfig:
    idle_timeout_ms: int = 30 * 60 * 1000
    max_turns: int = 50
    satisfaction_half_life: float = 3.0
    positive_threshold: float = 0.5

    def __post_init__(self) -> None:
        int_in_range("session.idle_timeout_ms", self.idle_timeout_ms, 1_000, 7 * 86_400_000)
        int_in_range("session.max_turns", self.max_turns, 1, 100_000)
        positive("session.satisfaction_half_life", self.satisfaction_half_life)
        unit_interval("session.positive_threshold", self.positive_threshold)

    @property
    def satisfaction_weight(self) -> float:
        """The weight of a new reward in the average: half of it is gone after ``half_life`` rewards."""
        return float(1.0 - 0.5 ** (1.0 / self.satisfaction_half_life))


@dataclass(eq=False)  # __eq__ below: the action counts are an array
class Session:
    started_ms: int
    last_ms: int
    last_positive_ms: int  # -1: none yet
    turn: int
    satisfaction: float
    actions: NDArray[np.int64]
    rewards: int = 0

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Session)
            and (self.started_ms, self.last_ms, self.last_positive_ms, self.turn, self.satisfaction, self.rewards)
            == (other.started_ms, other.last_ms, other.last_positive_ms, other.turn, other.satisfaction, other.rewards)
            and np.array_equal(self.actions, other.actions)
        )

    @classmethod
    def start(cls, now_ms: int, n_actions: int) -> Session:
        if n_actions < 1:
            raise ConfigError(f"n_actions must be >= 1, got {n_actions}")
        return cls(now_ms, now_ms, -1, 0, 0.5, np.zeros(n_actions, dtype=np.int64))

    def expired(self, config: SessionConfig, now_ms: int) -> bool:
        """Whether a decision at ``now_ms`` starts a new session (idle for the timeout)."""
        return now_ms - self.last_ms >= config.idle_timeout_ms

    def decided(self, action: int, now_ms: int) -> None:
        self.turn += 1
        self.actions[action] += 1
        self.last_ms = max(self.last_ms, now_ms)

    def rewarded(self, reward: float, now_ms: int, config: SessionConfig | None = None) -> None:
        config = config or SessionConfig()
        self.satisfaction += config.satisfaction_weight * (min(max(reward, 0.0), 1.0) - self.satisfaction)
        self.rewards += 1
        if reward >= config.positive_threshold:
            self.last_positive_ms = max(self.last_positive_ms, now_ms)

    def features(self, config: SessionConfig, now_ms: int) -> NDArray[np.float64]:
        since = 1.0
        if self.last_positive_ms >= 0:
            since = min(max(now_ms - self.last_positive_ms, 0) / config.idle_timeout_ms, 1.0)
        shares = self.actions / max(self.turn, 1)
        head = [min(self.turn / config.max_turns, 1.0), self.satisfaction, since]
        return np.concatenate([head, shares]).astype(np.float64)

    def to_bytes(self) -> bytes:
        header = _HEADER.pack(
            _FORMAT, self.started_ms, self.last_ms, self.last_positive_ms, self.turn, self.satisfaction, self.rewards
        )
        return header + self.actions.astype("<i8").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Session:
        version, started, last, positive_ms, turn, satisfaction, rewards = _HEADER.unpack_from(data)
        if version != _FORMAT:
            raise ValueError(f"session format {version} is not {_FORMAT}")
        actions = np.frombuffer(data[_HEADER.size :], dtype="<i8").astype(np.int64)
        return cls(started, last, positive_ms, turn, satisfaction, actions, rewards)
