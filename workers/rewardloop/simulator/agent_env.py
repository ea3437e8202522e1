"""An agent-session simulator: a ``gymnasium.Env`` whose best policy plans, and whose MDP is exact.

An AI assistant serves a user for a session of turns. Each turn it chooses one
behaviour (:data:`ACTIONS`): a short answer, a detailed answer, a clarifying question, a proactive
suggestion, or offering a tool. Users come in personas with latent tastes over those behaviours
(:data:`PERSONAS`); a request may be ambiguous; the user's satisfaction (low, mid, high) decides
how likely they stay for another turn (the session has no fixed length). What makes one-step greed lose:

* an ambiguous request answered directly earns a fraction of a clear one's reward and may cost
  satisfaction; a clarifying question earns little now but makes the next answer count;
* a suggestion or a tool the persona likes raises satisfaction (the session lasts longer) at a
  lower reward now; one it dislikes lowers it.

The observation is what a shard knows at a decision (the issue's state features): the user's
persona as a user feature (one-hot), whether the request is ambiguous (request context) and the
session's recent satisfaction (one-hot). The learner does
not know the tastes or the dynamics; it learns them from rewards, which are noisy ratings around a
mean the (state, action) fixes.

Every transition comes from tables built once (:class:`SessionMDP`), so value iteration over them
is the exact optimum, and any deterministic policy's return is exact too (no Monte Carlo). A
session under the optimal policy earns 4.95; the best one-step policy (the highest mean rating in
every state: what a contextual bandit converges to) 2.16; the best fixed action 1.87:

>>> env = AgentSessionEnv(seed=0)
>>> mdp = env.mdp
>>> mdp.n_states, mdp.n_actions
(18, 5)
>>> q_star = mdp.optimal_q()
>>> round(mdp.start_value(q_star.argmax(axis=1)), 3)
4.949
>>> {name: round(value, 3) for name, value in mdp.benchmarks().items()}
{'optimal': 4.949, 'one-step policy': 2.161, 'best fixed action': 1.867}
>>> obs, info = env.reset(seed=1)
>>> obs.shape, env.observation_space.contains(obs), info["state"] == mdp.state_of(obs)
((7,), True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

ACTIONS = ("short_answer", "detailed_answer", "clarify", "suggest", "offer_tool")
SHORT, DETAILED, CLARIFY, SUGGEST, TOOL = range(len(ACTIONS))
SATISFACTION_LEVELS = 3
"""Low, mid, high; a session starts at mid."""


@dataclass(frozen=True)
class Persona:
    """A kind of user: what each behaviour earns and does to their satisfaction.

    ``answer``: mean rating of a short and of a detailed answer to a clear request. ``suggest`` and
    ``tool``: mean rating of a proactive suggestion and of a tool offer, and the chance each moves
    satisfaction one level (positive: up, negative: down). ``ambiguous``: how often a new request is
    ambiguous. ``patience``: the chance a clarifying question of a clear request does *not* annoy
    (annoyance drops satisfaction a level).
    """

    name: str
    answer: tuple[float, float]
    suggest: tuple[float, float]
    tool: tuple[float, float]
    ambiguous: float
    patience: float


PERSONAS = (
    Persona("novice", answer=(0.45, 0.90), suggest=(0.30, +0.7), tool=(0.15, -0.4), ambiguous=0.6, patience=0.6),
    Persona("expert", answer=(0.90, 0.50), suggest=(0.10, -0.6), tool=(0.30, +0.3), ambiguous=0.3, patience=0.3),
    Persona("busy", answer=(0.80, 0.30), suggest=(0.15, -0.3), tool=(0.40, +0.8), ambiguous=0.45, patience=0.2),
)
STAY = (0.50, 0.75, 0.90)
"""The chance a user at each satisfaction level takes another turn."""
AMBIGUOUS_ANSWER = 0.3
"""An answer to an ambiguous request earns this fraction of a clear answer's rating..."""
AMBIGUOUS_LETDOWN = 0.6
"""...and drops satisfaction a level with this chance."""
CLEAR_ANSWER_DELIGHT = 0.25
"""A good answer (rated >= 0.8) to a clear request raises satisfaction a level with this chance."""
AMBIGUOUS_SIDE_OFFER = 0.5
"""A suggestion or a tool offered while an ambiguous request is open earns this fraction."""
CLARIFY_REWARD = 0.05


@dataclass(frozen=True)
class Outcome:
    probability: float
    next_state: int | None  # None: the session ended


class SessionMDP:
    """The simulator's exact MDP: states (persona, ambiguous, satisfaction), 5 actions.

    ``transitions[s, a, s']`` leaves probability ``1 - transitions[s, a].sum()`` for the session's
    end; ``rewards[s, a]`` is the mean rating.
    """

    def __init__(self) -> None:
        self.n_personas = len(PERSONAS)
        self.n_states = self.n_personas * 2 * SATISFACTION_LEVELS
        self.n_actions = len(ACTIONS)
        self.transitions = np.zeros((self.n_states, self.n_actions, self.n_states))
        self.rewards = np.zeros((self.n_states, self.n_actions))
        for s in range(self.n_states):
            for a in range(self.n_actions):
                reward, outcomes = self._step(s, a)
                self.rewards[s, a] = reward
                for o in outcomes:
                    if o.next_state is not None:
                        self.transitions[s, a, o.next_state] += o.probability
        self.start = np.zeros(self.n_states)
        for p, persona in enumerate(PERSONAS):
            for ambiguous, chance in ((1, persona.ambiguous), (0, 1.0 - persona.ambiguous)):
                self.start[self.index(p, ambiguous, 1)] += chance / self.n_personas

    def index(self, persona: int, ambiguous: int, satisfaction: int) -> int:
        return (persona * 2 + ambiguous) * SATISFACTION_LEVELS + satisfaction

    def unpack(self, state: int) -> tuple[int, int, int]:
        rest, satisfaction = divmod(state, SATISFACTION_LEVELS)
        persona, ambiguous = divmod(rest, 2)
        return persona, ambiguous, satisfaction

    @property
    def observation_size(self) -> int:
        return self.n_personas + 1 + SATISFACTION_LEVELS

    def observe(self, state: int) -> NDArray[np.float32]:
        persona, ambiguous, satisfaction = self.unpack(state)
        obs = np.zeros(self.observation_size, dtype=np.float32)
        obs[persona] = 1.0
        obs[self.n_personas] = ambiguous
        obs[self.n_personas + 1 + satisfaction] = 1.0
        return obs

    def state_of(self, obs: NDArray[np.floating[Any]]) -> int:
        """The state an observation shows (the inverse of :meth:`observe`)."""
        k = self.n_personas
        persona = int(np.argmax(obs[:k]))
        satisfaction = int(np.argmax(obs[k + 1 :]))
        return self.index(persona, int(obs[k] > 0.5), satisfaction)

    @cached_property
    def observations(self) -> NDArray[np.float32]:
        """Every state's observation, row ``s`` for state ``s`` (to evaluate a network exactly)."""
        return np.stack([self.observe(s) for s in range(self.n_states)])

    def _step(self, state: int, action: int) -> tuple[float, list[Outcome]]:
        """The mean rating and the outcomes of ``action`` in ``state``."""
        p, ambiguous, sat = self.unpack(state)
        persona = PERSONAS[p]
        # (chance, satisfaction move, ambiguity of the next request: None = a new request)
        moves: list[tuple[float, int, int | None]]
        if action in (SHORT, DETAILED):
            rating = persona.answer[action]
            if ambiguous:
                reward = AMBIGUOUS_ANSWER * rating
                moves = [(AMBIGUOUS_LETDOWN, -1, None), (1 - AMBIGUOUS_LETDOWN, 0, None)]
            else:
                reward = rating
                up = CLEAR_ANSWER_DELIGHT if rating >= 0.8 else 0.0
                moves = [(up, +1, None), (1 - up, 0, None)]
        elif action == CLARIFY:
            reward = CLARIFY_REWARD
            # An ambiguous request becomes clear; asking about a clear one may annoy.
            moves = [(1.0, 0, 0)] if ambiguous else [(1 - persona.patience, -1, 0), (persona.patience, 0, 0)]
        else:
            reward, shift = persona.suggest if action == SUGGEST else persona.tool
            if ambiguous:
                reward *= AMBIGUOUS_SIDE_OFFER
            # The request is still open; the side offer may change how the user feels.
            moves = [(abs(shift), 1 if shift > 0 else -1, ambiguous), (1 - abs(shift), 0, ambiguous)]
        outcomes: list[Outcome] = []
        for chance, move, next_ambiguous in moves:
            if chance == 0.0:
                continue
            new_sat = min(max(sat + move, 0), SATISFACTION_LEVELS - 1)
            stay = STAY[new_sat]
            outcomes.append(Outcome(chance * (1 - stay), None))
            branches: tuple[tuple[int, float], ...] = (
                ((1, persona.ambiguous), (0, 1 - persona.ambiguous))
                if next_ambiguous is None
                else ((next_ambiguous, 1.0),)
            )
            for amb, c in branches:
                outcomes.append(Outcome(chance * stay * c, self.index(p, amb, new_sat)))
        return reward, outcomes

    def optimal_q(self, gamma: float = 1.0, tolerance: float = 1e-12) -> FloatArray:
        """Q* for discount ``gamma`` by value iteration; ``gamma = 1`` values the return itself.

        Every step ends the session with probability >= ``1 - max(STAY)``, so the Bellman operator
        contracts by that factor even undiscounted; the sweeps stop once a sweep moves no value by
        more than ``tolerance``.
        """
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        q = np.zeros((self.n_states, self.n_actions))
        while True:
            new = self.rewards + gamma * self.transitions @ q.max(axis=1)
            if np.max(np.abs(new - q)) <= tolerance:
                return new
            q = new

    def policy_values(self, policy: IntArray, gamma: float = 1.0) -> FloatArray:
        """V^π of a deterministic policy (one action per state), by solving the linear system."""
        states = np.arange(self.n_states)
        p = self.transitions[states, policy]
        r = self.rewards[states, policy]
        return np.asarray(np.linalg.solve(np.eye(self.n_states) - gamma * p, r))

    def start_value(self, policy: IntArray) -> float:
        """The expected return of a session under ``policy``."""
        return float(self.start @ self.policy_values(np.asarray(policy)))

    def myopic_policy(self) -> IntArray:
        """The best one-step policy: in every state the action with the highest mean rating."""
        return np.asarray(self.rewards.argmax(axis=1), dtype=np.int64)

    def benchmarks(self) -> dict[str, float]:
        """The exact returns a learner is measured against: the optimum, the best one-step policy
        and the best fixed action."""
        return {
            "optimal": self.start_value(self.optimal_q().argmax(axis=1)),
            "one-step policy": self.start_value(self.myopic_policy()),
            "best fixed action": max(self.start_value(np.full(self.n_states, a)) for a in range(self.n_actions)),
        }

    def visit_frequencies(self, policy: IntArray) -> FloatArray:
        """The expected number of visits of each state in a session under ``policy``."""
        states = np.arange(self.n_states)
        p = self.transitions[states, np.asarray(policy)]
        return np.asarray(np.linalg.solve(np.eye(self.n_states) - p.T, self.start))


class AgentSessionEnv(gym.Env[NDArray[np.float32], np.int64]):
    """One user's session with the assistant (see the module docstring).

    ``reward_noise`` is the standard deviation of the Gaussian noise on each rating. A session lasts
    until the user leaves, or is truncated after ``max_turns`` (the MDP has no horizon: at most
    ``max(STAY) ** max_turns`` of sessions reach it). ``info["state"]`` is the MDP state index, for
    tabular learners and for exact evaluation.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, reward_noise: float = 0.1, max_turns: int = 100, seed: int | None = None) -> None:
        if reward_noise < 0:
            raise ValueError(f"reward_noise must be >= 0, got {reward_noise}")
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        self.mdp = SessionMDP()
        self.max_turns = max_turns
        self._turn = 0
        self.reward_noise = reward_noise
        self.action_space = gym.spaces.Discrete(self.mdp.n_actions)
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(self.mdp.observation_size,), dtype=np.float32)
        self._state = 0
        self._end = self.mdp.n_states
        # The next-state distributions with the session's end as a last column.
        ends = 1.0 - self.mdp.transitions.sum(axis=2, keepdims=True)
        self._cumulative = np.cumsum(np.concatenate([self.mdp.transitions, np.clip(ends, 0, 1)], axis=2), axis=2)
        if seed is not None:
            super().reset(seed=seed)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        super().reset(seed=seed)
        self._state = int(np.searchsorted(np.cumsum(self.mdp.start), self.np_random.random(), side="right"))
        self._turn = 0
        return self.mdp.observe(self._state), {"state": self._state}

    def step(self, action: np.int64 | int) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        a = int(action)
        if not 0 <= a < self.mdp.n_actions:
            raise ValueError(f"action must be in [0, {self.mdp.n_actions}), got {action}")
        s = self._state
        reward = float(self.mdp.rewards[s, a] + self.reward_noise * self.np_random.standard_normal())
        cumulative = self._cumulative[s, a]
        nxt = int(np.searchsorted(cumulative, self.np_random.random() * cumulative[-1], side="right"))
        self._turn += 1
        if nxt >= self._end:
            # The user left: the last observation repeats the state the session ended in.
            return self.mdp.observe(s), reward, True, False, {"state": s}
        self._state = nxt
        # A session still going at max_turns is cut (truncated, not terminated: it had a future).
        return self.mdp.observe(nxt), reward, False, self._turn >= self.max_turns, {"state": nxt}
