"""Population priors under time decay: shards with different epochs merge into the present (pure:
the Redis round trip of ``Priors.refresh`` is replaced by handing one shard the other's hash)."""

from __future__ import annotations

import time

import numpy as np

from rewardloop.learning.bandits import make_policy
from rewardloop.state.priors import EPOCH_FIELD, POPULATION, Priors
from rewardloop.workers.config import ServiceConfig

HOUR_MS = 3_600_000


def _shards(half_life_s: float | None) -> tuple[Priors, Priors, ServiceConfig]:
    reward = {} if half_life_s is None else {"half_life_seconds": half_life_s}
    config = ServiceConfig.from_dict(
        {"surfaces": {"s": {"algorithm": "ucb1", "items": ["a", "b"], "cold_start": {"strength": 2.0},
                            "reward": reward}}}
    )  # fmt: skip
    policies = {"s": make_policy(config.surfaces["s"].policy_config, 2)}
    return Priors(config.surfaces, policies, 0, 2), Priors(config.surfaces, policies, 1, 2), config


def _published(shard: Priors) -> dict[bytes, bytes]:
    """What ``refresh`` writes to the shard's hash."""
    policy = shard._policies["s"]
    blobs = {segment.encode(): policy.dump_state(state) for segment, state in shard._own["s"].items()}
    if "s" in shard._epochs:
        blobs[EPOCH_FIELD.encode()] = str(shard._epochs["s"]).encode()
    return blobs


def test_contributions_with_different_epochs_merge_into_the_decayed_present() -> None:
    old, recent, _ = _shards(half_life_s=3600.0)
    now = int(time.time() * 1000)
    # Shard 0 saw arm "a" rewarded 10 hours ago (and its epoch is then); shard 1 sees arm "b" now,
    # after a rebase-worthy gap in its own history (its epoch moved past 64 half-lives).
    for k in range(8):
        old.learn("s", "", 0, 1.0, None, None, at_ms=now - 10 * HOUR_MS + k)
    recent.learn("s", "", 1, 1.0, None, None, at_ms=now - 100 * HOUR_MS)
    for k in range(4):
        recent.learn("s", "", 1, 0.5, None, None, at_ms=now - k)
    recent.revise("s", "", 1, 0.5, 1.0, None, None, at_ms=now - 3)  # the last one was corrected
    assert old._epochs["s"] != recent._epochs["s"]
    recent._recompute("s", [_published(old)])
    prior, strength = recent.prior("s", "anything")  # type: ignore[misc]
    assert strength == 2.0
    weights_a = [2.0 ** (-(10 * HOUR_MS - k) / HOUR_MS) for k in range(8)]
    weights_b = [2.0**-100] + [2.0 ** (-k / HOUR_MS) for k in range(4)]
    np.testing.assert_allclose(prior.arrays["counts"], [sum(weights_a), sum(weights_b)], rtol=1e-5)
    sums_b = weights_b[0] + 0.5 * sum(weights_b[1:4]) + weights_b[4]
    np.testing.assert_allclose(prior.arrays["reward_sums"], [sum(weights_a), sums_b], rtol=1e-5)
    assert POPULATION in recent._segment_priors["s"]


def test_without_decay_contributions_add_up_as_counts() -> None:
    first, second, _ = _shards(half_life_s=None)
    for k in range(3):
        first.learn("s", "", 0, 1.0, None, None, at_ms=k)
    second.learn("s", "", 1, 0.0, None, None, at_ms=10**13)
    second._recompute("s", [_published(first)])
    prior, _ = second.prior("s", "")  # type: ignore[misc]
    assert prior.arrays["counts"].tolist() == [3.0, 1.0] and not first._epochs
