"""Snapshot + log replay rebuilds a user's state exactly (pure, no Redis)."""

from __future__ import annotations

import numpy as np
import pytest

from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.policies import make_policy
from rewardloop.workers.user_state import (
    LoggedReward,
    encode_snapshot,
    new_user_state,
    replay,
    replay_start,
    restore_from_snapshot,
)

ITEMS = [f"i{k}" for k in range(6)]
P = "ab" * 16  # a pseudonym: 32 hex digits


def _config(algorithm: str = "ucb1", items: list[str] = ITEMS) -> ServiceConfig:
    return ServiceConfig.from_dict(
        {
            "surfaces": {
                "a": {"algorithm": algorithm, "items": items},
                "b": {"algorithm": "thompson", "items": ITEMS},
            }
        }
    )


def _policies(config: ServiceConfig) -> dict:  # type: ignore[type-arg]
    return {n: make_policy(s.policy_config, len(s.items)) for n, s in config.surfaces.items()}


def _log(n: int, seed: int = 0) -> list[LoggedReward]:
    rng = np.random.default_rng(seed)
    return [
        LoggedReward(f"{1000 + k}-0", str(rng.choice(["a", "b"])), f"i{rng.integers(6)}", float(rng.random() < 0.4))
        for k in range(n)
    ]


def test_snapshot_plus_tail_equals_full_replay() -> None:
    config = _config()
    policies = _policies(config)
    log = _log(50)
    full = new_user_state(P, policies, seed=1)
    replay(full, log, policies, config.surfaces)

    partial = new_user_state(P, policies, seed=1)
    replay(partial, log[:20], policies, config.surfaces)
    blob = encode_snapshot(partial, policies, config.surfaces)
    rebuilt = restore_from_snapshot(blob, P, policies, config.surfaces, seed=1)
    assert replay_start(rebuilt) == f"({log[19].stream_id}"
    # The store's XRANGE is exclusive of the snapshot's position; replay also skips
    # anything at or before it, so handing it the whole log is harmless.
    replay(rebuilt, log, policies, config.surfaces)
    assert rebuilt.last_id == full.last_id == log[-1].stream_id
    assert rebuilt.policies == full.policies


def test_surface_with_changed_config_is_rebuilt_from_the_whole_log() -> None:
    old = _config()
    old_policies = _policies(old)
    log = _log(40, seed=3)
    state = new_user_state(P, old_policies, seed=1)
    replay(state, log[:30], old_policies, old.surfaces)
    blob = encode_snapshot(state, old_policies, old.surfaces)

    new = _config(algorithm="epsilon_greedy")  # surface "a" changed, "b" did not
    new_policies = _policies(new)
    rebuilt = restore_from_snapshot(blob, P, new_policies, new.surfaces, seed=1)
    assert rebuilt.stale == {"a"}
    assert replay_start(rebuilt) == "-"
    replay(rebuilt, log, new_policies, new.surfaces)

    expected = new_user_state(P, new_policies, seed=1)
    replay(expected, log, new_policies, new.surfaces)
    assert rebuilt.policies == expected.policies
    assert not rebuilt.stale and rebuilt.dirty


def test_rewards_for_items_no_longer_configured_are_skipped() -> None:
    config = _config(items=ITEMS[:3])
    policies = _policies(config)
    state = new_user_state(P, policies, seed=1)
    replay(
        state,
        [LoggedReward("1-0", "a", "i5", 1.0), LoggedReward("2-0", "gone", "i1", 1.0)],
        policies,
        config.surfaces,
    )
    assert state.policies["a"].n_updates == 0
    assert state.last_id == "2-0"


@pytest.mark.parametrize("blob", [b"XXXX\x01\x00\x02\x00\x00\x00{}", b"RLUS\x09\x00\x02\x00\x00\x00{}"])
def test_foreign_snapshots_are_rejected(blob: bytes) -> None:
    config = _config()
    with pytest.raises(ValueError, match="not a user snapshot"):
        restore_from_snapshot(blob, P, _policies(config), config.surfaces, seed=1)
