"""Time decay in a user's state: the decayed statistics, any arrival order, snapshots and rebases (pure)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rewardloop.learning.bandits import make_policy
from rewardloop.state.records import FeedbackRecord
from rewardloop.state.snapshots import encode_snapshot, replay, restore_from_snapshot
from rewardloop.state.user_state import UserState, new_user_state
from rewardloop.workers.config import ServiceConfig
from tests.round_trip import snapshot_round_trip

ITEMS = [f"i{k}" for k in range(4)]
P = "cd" * 16
START = 1_700_000_000_000
HALF_LIFE_S = 2.0


def logged(
    stream_id: str, surface: str, item_id: str, reward: float, features: bytes = b"", propensity: float = 0.0, **kw: Any
) -> FeedbackRecord:
    """A feedback-log entry of user ``P`` at ``stream_id``."""
    event_id = kw.pop("event_id", "")
    return FeedbackRecord(
        P, event_id, surface, item_id, reward, features=features, propensity=propensity, stream_id=stream_id, **kw
    )


def _config(half_life_s: float | None = HALF_LIFE_S, algorithm: str = "ucb1") -> ServiceConfig:
    reward: dict[str, object] = {"window_seconds": 1, "signals": {"click": {"weight": 1.0}}}
    if half_life_s is not None:
        reward["half_life_seconds"] = half_life_s
    return ServiceConfig.from_dict({"surfaces": {"a": {"algorithm": algorithm, "items": ITEMS, "reward": reward}}})


def _policies(config: ServiceConfig) -> dict:  # type: ignore[type-arg]
    return {n: make_policy(s.policy_config, len(s.items)) for n, s in config.surfaces.items()}


def _events(n: int, seed: int, span_s: float = 400.0) -> list[tuple[int, int, float]]:
    """(occurred_at_ms, item, click) over ``span_s`` seconds: 200 half-lives, so the epoch moves."""
    rng = np.random.default_rng(seed)
    times = np.sort(rng.uniform(0, span_s * 1000, size=n)).astype(np.int64) + START
    return [(int(t), int(rng.integers(len(ITEMS))), float(rng.random() < 0.5)) for t in times]


def _log(events: list[tuple[int, int, float]]) -> list[FeedbackRecord]:
    """Feedback without a decision, logged in the given order (stream ids follow the order)."""
    return [
        logged(f"{START + 10_000_000 + k}-0", "a", f"i{item}", click, event_id=f"e{t}-{item}",
                     value=click, occurred_at_ms=t)
        for k, (t, item, click) in enumerate(events)
    ]  # fmt: skip


def _read(state: UserState, config: ServiceConfig, now_ms: int) -> dict[str, np.ndarray]:
    policy = _policies(config)["a"]
    return state.decision_state(policy, config.surfaces["a"], now_ms).arrays


def test_each_observation_weighs_half_per_half_life_before_now() -> None:
    config, events = _config(), _events(300, seed=1)
    policies = _policies(config)
    state = new_user_state(P, policies, seed=1)
    replay(state, _log(events), policies, config.surfaces)
    now = events[-1][0] + 1_500
    counts, sums = np.zeros(len(ITEMS)), np.zeros(len(ITEMS))
    for t, item, click in events:
        counts[item] += 2.0 ** -((now - t) / (HALF_LIFE_S * 1000))
        sums[item] += click * 2.0 ** -((now - t) / (HALF_LIFE_S * 1000))
    read = _read(state, config, now)
    np.testing.assert_allclose(read["counts"], counts, rtol=1e-9)
    np.testing.assert_allclose(read["reward_sums"], sums, rtol=1e-9, atol=1e-300)
    assert state.epochs["a"] > events[0][0] + 64 * HALF_LIFE_S * 1000, "the epoch must have moved"
    assert state.policies["a"].n_updates == len(events)
    # Without decay the same log gives plain counts.
    plain_config = _config(half_life_s=None)
    plain = new_user_state(P, _policies(plain_config), seed=1)
    replay(plain, _log(events), _policies(plain_config), plain_config.surfaces)
    assert _read(plain, plain_config, now)["counts"].sum() == len(events) and not plain.epochs


@pytest.mark.parametrize("seed", [2, 3])
def test_arrival_order_does_not_change_the_decayed_state(seed: int) -> None:
    config, events = _config(), _events(200, seed=seed)
    policies = _policies(config)
    in_order = new_user_state(P, policies, seed=1)
    replay(in_order, _log(events), policies, config.surfaces)
    shuffled_events = [events[i] for i in np.random.default_rng(seed).permutation(len(events))]
    shuffled = new_user_state(P, policies, seed=1)
    replay(shuffled, _log(shuffled_events), policies, config.surfaces)
    now = events[-1][0]
    for key, array in _read(in_order, config, now).items():
        np.testing.assert_allclose(_read(shuffled, config, now)[key], array, rtol=1e-9, atol=1e-300, err_msg=key)


@pytest.mark.parametrize("algorithm", ["ucb1", "thompson", "linucb"])
def test_a_snapshot_at_any_point_plus_replay_is_the_straight_run_bit_for_bit(algorithm: str) -> None:
    config = _config(algorithm=algorithm) if algorithm != "linucb" else _linear_config()
    policies = {n: make_policy(s.policy_config, len(s.items), s.context_dim) for n, s in config.surfaces.items()}
    log = _joined_log(240, seed=4) if algorithm == "linucb" else _log(_events(240, seed=4))
    full = new_user_state(P, policies, seed=1)
    replay(full, log, policies, config.surfaces)
    assert full.policies["a"].n_updates >= 100 and full.epochs["a"] > START + 64 * HALF_LIFE_S * 1000
    for cut in (1, 60, 150, 239):
        partial = new_user_state(P, policies, seed=1)
        replay(partial, log[:cut], policies, config.surfaces)
        rebuilt = snapshot_round_trip(partial, policies, config.surfaces)
        assert rebuilt.epochs == partial.epochs
        replay(rebuilt, log, policies, config.surfaces)
        assert rebuilt.policies == full.policies, cut
        assert rebuilt.epochs == full.epochs and rebuilt.ledger == full.ledger


def _linear_config() -> ServiceConfig:
    return ServiceConfig.from_dict(
        {
            "surfaces": {
                "a": {
                    "algorithm": "linucb", "items": ITEMS, "features": {"numeric": ["f0", "f1"]},
                    "reward": {"window_seconds": 1, "half_life_seconds": HALF_LIFE_S},
                }
            }
        }
    )  # fmt: skip


def _joined_log(n: int, seed: int) -> list[FeedbackRecord]:
    """Clicks joined to decisions (their context and time), some corrected by a second event."""
    rng = np.random.default_rng(seed)
    log = []
    for k, (t, item, click) in enumerate(_events(n, seed)):
        features = np.array([1.0, *rng.normal(size=2)]).astype("<f8").tobytes()
        decision = f"d{k // 2}"  # two events per decision: the second one revises the first reward
        log.append(
            logged(
                f"{t + 50}-0", "a", f"i{item}", click, features, 0.5, event_id=f"e{k}", value=click,
                occurred_at_ms=t + 50, decision_id=decision, decided_at_ms=t - 100 * (k % 2),
            )
        )  # fmt: skip
    return log


def test_changing_the_half_life_rebuilds_the_surface_from_the_log() -> None:
    old, new = _config(), _config(half_life_s=60.0)
    log = _log(_events(50, seed=5))
    state = new_user_state(P, _policies(old), seed=1)
    replay(state, log, _policies(old), old.surfaces)
    rebuilt = restore_from_snapshot(encode_snapshot(state, _policies(old), old.surfaces), P, _policies(new),
                                    new.surfaces, 1)  # fmt: skip
    assert rebuilt.stale == {"a"} and not rebuilt.epochs
    replay(rebuilt, log, _policies(new), new.surfaces)
    expected = new_user_state(P, _policies(new), seed=1)
    replay(expected, log, _policies(new), new.surfaces)
    assert rebuilt.policies == expected.policies and rebuilt.epochs == expected.epochs


def test_evidence_whose_weight_underflows_is_learned_as_nothing_not_an_error() -> None:
    """A click on a decision 30 minutes old, with a one-second half-life, after the epoch moved to
    now: its weight 2^-1800 underflows to 0. It counts as an update that weighs nothing."""
    config = ServiceConfig.from_dict(
        {"surfaces": {"a": {"algorithm": "ucb1", "items": ITEMS,
                            "reward": {"window_seconds": 3600, "half_life_seconds": 1}}}}
    )  # fmt: skip
    policies = _policies(config)
    now = START + 1_800_000
    recent = logged(f"{now}-0", "a", "i0", 1.0, event_id="recent", value=1.0, occurred_at_ms=now)
    old_click = logged(
        f"{now + 1}-0", "a", "i1", 1.0, event_id="old", value=1.0, occurred_at_ms=now, decision_id="d0",
        decided_at_ms=START,
    )  # fmt: skip
    state = new_user_state(P, policies, seed=1)
    replay(state, [recent, old_click], policies, config.surfaces)
    assert state.policies["a"].n_updates == 2
    assert state.policies["a"].arrays["counts"].tolist() == [1.0, 0.0, 0.0, 0.0]
    blob = encode_snapshot(state, policies, config.surfaces)
    assert restore_from_snapshot(blob, P, policies, config.surfaces, 1).policies == state.policies
