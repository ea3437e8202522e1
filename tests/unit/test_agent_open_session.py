"""An agent surface's stored session (``workers/agents.py``): its byte form, and masked exploration."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from rewardloop.learning.agents.exploration import EpsilonGreedy
from rewardloop.learning.agents.session import Session
from rewardloop.workers.agents import AgentSurface, OpenSession, Step, expiry_key

floats = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@given(
    actions=st.lists(st.integers(0, 1000), min_size=1, max_size=8),
    state=st.lists(floats, min_size=1, max_size=40),
    pending=st.booleans(),
    turn=st.integers(0, 10_000),
    satisfaction=st.floats(0, 1),
)
def test_an_open_session_reads_back_as_written(
    actions: list[int], state: list[float], pending: bool, turn: int, satisfaction: float
) -> None:
    session = Session(1_000, 2_000, -1, turn, satisfaction, np.asarray(actions, dtype=np.int64), rewards=turn)
    step = Step("d" * 32, tuple(state), len(actions) - 1, "abc.v7", 2_000) if pending else None
    back = OpenSession.from_bytes(OpenSession(session, step).to_bytes())
    assert back.session == session
    assert back.pending == step


def test_candidates_restrict_exploration_to_them_with_exact_propensities() -> None:
    surface = AgentSurface.__new__(AgentSurface)  # only the exploration rule is used
    surface.exploration = EpsilonGreedy(start=0.2, end=0.2, decay_steps=1)
    q = np.array([5.0, 1.0, 3.0, 2.0])
    allowed = np.array([False, True, True, True])
    p = surface._masked(q, allowed, transitions=10)
    # Greedy among the allowed (index 2) gets 0.8 + 0.2 / 3; the others 0.2 / 3; the excluded 0.
    np.testing.assert_allclose(p, [0.0, 0.2 / 3, 0.8 + 0.2 / 3, 0.2 / 3])
    assert expiry_key(3) == "rl:sessions:3"
