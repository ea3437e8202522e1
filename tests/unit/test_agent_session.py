"""Session features of agent surfaces: bounds, the satisfaction average, expiry, and the byte form."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardloop.learning.agents.session import FEATURES, Session, SessionConfig
from rewardloop.learning.params import ConfigError

events = st.lists(
    st.tuples(st.booleans(), st.integers(0, 4), st.floats(-3, 3, allow_nan=False), st.integers(0, 120_000)),
    max_size=60,
)


@given(events=events)
@settings(max_examples=200, deadline=None)
def test_features_stay_in_the_unit_interval_and_round_trip(events: list) -> None:
    config = SessionConfig(idle_timeout_ms=60_000, max_turns=20)
    session, now = Session.start(0, 5), 0
    for is_decision, action, reward, gap in events:
        now += gap
        if is_decision:
            session.decided(action, now)
        else:
            session.rewarded(reward, now, config)
        x = session.features(config, now)
        assert x.shape == (len(FEATURES) + 5,)
        assert np.all((x >= 0) & (x <= 1))
        assert Session.from_bytes(session.to_bytes()) == session
    if session.turn:
        assert x[len(FEATURES) :].sum() == pytest.approx(1.0)


def test_satisfaction_halves_its_distance_after_the_half_life() -> None:
    config = SessionConfig(satisfaction_half_life=2.0)
    session = Session.start(0, 2)
    for _ in range(2):
        session.rewarded(1.0, 0, config)
    assert session.satisfaction == pytest.approx(0.75)  # 0.5 -> half the way to 1
    for _ in range(40):
        session.rewarded(0.0, 0, config)
    assert session.satisfaction < 1e-5


def test_a_session_expires_after_the_idle_timeout_and_since_positive_counts_from_the_last() -> None:
    config = SessionConfig(idle_timeout_ms=10_000)
    session = Session.start(0, 2)
    session.decided(0, 1_000)
    assert not session.expired(config, 10_999) and session.expired(config, 11_000)
    assert session.features(config, 5_000)[2] == 1.0  # no positive reward yet
    session.rewarded(0.9, 2_000, config)
    session.rewarded(0.1, 3_000, config)  # not positive: the clock keeps the 0.9
    assert session.features(config, 7_000)[2] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"idle_timeout_ms": 10}, "session.idle_timeout_ms"),
        ({"max_turns": 0}, "session.max_turns"),
        ({"satisfaction_half_life": 0}, "session.satisfaction_half_life must be > 0"),
        ({"positive_threshold": 2}, r"session.positive_threshold must be in \[0, 1\]"),
    ],
)
def test_bad_session_configs_name_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SessionConfig(**kwargs)


def test_another_format_is_refused() -> None:
    data = bytearray(Session.start(0, 2).to_bytes())
    data[0] = 9
    with pytest.raises(ValueError, match="session format 9"):
        Session.from_bytes(bytes(data))
