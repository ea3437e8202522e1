"""Snapshot + log replay rebuilds a user's state exactly (pure, no Redis)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rewardloop.learning.bandits import make_policy
from rewardloop.state.records import FeedbackRecord
from rewardloop.state.snapshots import encode_snapshot, replay, replay_start, restore_from_snapshot
from rewardloop.state.user_state import UserState, new_user_state
from rewardloop.workers.config import ServiceConfig
from tests.round_trip import snapshot_round_trip

ITEMS = [f"i{k}" for k in range(6)]
P = "ab" * 16  # a pseudonym: 32 hex digits


def logged(
    stream_id: str, surface: str, item_id: str, reward: float, features: bytes = b"", propensity: float = 0.0, **kw: Any
) -> FeedbackRecord:
    """A feedback-log entry of user ``P`` at ``stream_id``."""
    event_id = kw.pop("event_id", "")
    return FeedbackRecord(
        P, event_id, surface, item_id, reward, features=features, propensity=propensity, stream_id=stream_id, **kw
    )


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


def _log(n: int, seed: int = 0) -> list[FeedbackRecord]:
    rng = np.random.default_rng(seed)
    return [
        logged(f"{1000 + k}-0", str(rng.choice(["a", "b"])), f"i{rng.integers(6)}", float(rng.random() < 0.4))
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
    rebuilt = snapshot_round_trip(partial, policies, config.surfaces)
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
        [logged("1-0", "a", "i5", 1.0), logged("2-0", "gone", "i1", 1.0)],
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


def assert_snapshots_agree(
    full: UserState,
    log: list[FeedbackRecord],
    policies: dict,
    config: ServiceConfig,
    cuts: tuple[int, ...],  # type: ignore[type-arg]
) -> None:
    """A snapshot after ``log[:cut]`` plus a replay of the log equals ``full``, the uninterrupted run."""
    for cut in cuts:
        partial = new_user_state(P, policies, seed=1)
        replay(partial, log[:cut], policies, config.surfaces)
        rebuilt = snapshot_round_trip(partial, policies, config.surfaces)
        replay(rebuilt, log, policies, config.surfaces)
        assert rebuilt.policies == full.policies, cut
        assert rebuilt.ledger == full.ledger and rebuilt.epochs == full.epochs, cut
        assert rebuilt.bursts.to_lists() == full.bursts.to_lists(), cut


def _fused_log(n: int, seed: int = 0) -> list[FeedbackRecord]:
    """Feedback joined to decisions: several signals per decision-item, late and early, retried ids,
    impressions only for some (their window closes at a later event), burst-like timing."""
    rng = np.random.default_rng(seed)
    signals = [(1, 1.0), (2, 15.0), (3, 4.0), (4, 1.0), (5, 1.0), (7, 1.0), (12, 1.0), (11, 20.0)]
    log = []
    for k in range(n):
        decision = int(rng.integers(12))
        signal, value = signals[int(rng.integers(len(signals)))]
        now = 1_000_000 + 400 * k
        log.append(
            logged(
                f"{now}-0", "a", f"i{decision % 6}", 0.0, event_id=f"e{rng.integers(n)}", signal=signal,
                value=value, occurred_at_ms=now - int(rng.integers(3_000)), decision_id=f"d{decision}",
                decided_at_ms=1_000_000 + 700 * decision,
            )
        )  # fmt: skip
    return log


def test_fused_rewards_survive_a_snapshot_at_any_point() -> None:
    config = ServiceConfig.from_dict(
        {
            "surfaces": {
                "a": {"algorithm": "ucb1", "items": ITEMS, "reward": {"window_seconds": 2, "default_reward": 0.5}}
            }
        }
    )
    policies = _policies(config)
    log = _fused_log(120)
    full = new_user_state(P, policies, seed=1)
    replay(full, log, policies, config.surfaces)
    assert full.policies["a"].n_updates >= 12 and full.ledger.items["a"]
    assert_snapshots_agree(full, log, policies, config, cuts=(1, 37, 80, 119))


def test_a_version_1_snapshot_is_rebuilt_from_the_whole_log() -> None:
    config = _config()
    policies = _policies(config)
    log = _log(30)
    state = new_user_state(P, policies, seed=1)
    replay(state, log, policies, config.surfaces)
    blob = bytearray(encode_snapshot(state, policies, config.surfaces))
    blob[4:6] = (1).to_bytes(2, "little")
    rebuilt = restore_from_snapshot(bytes(blob), P, policies, config.surfaces, seed=1)
    assert rebuilt.stale == {"a", "b"} and replay_start(rebuilt) == "-"
    replay(rebuilt, log, policies, config.surfaces)
    assert rebuilt.policies == state.policies


def _close(stream_ms: int, decision: int, *items: str) -> FeedbackRecord:
    """The shard's window-close entry for decision ``d<decision>`` (decided at 1_000_000 + 700 k)."""
    decided = 1_000_000 + 700 * decision
    return logged(
        f"{stream_ms}-0", "a", "", 0.5, event_id=f"window-close:d{decision}", signal=5, value=0.0,
        occurred_at_ms=decided + 2_000, decision_id=f"d{decision}", decided_at_ms=decided, window_close=True,
        closes=tuple((item, 0.25) for item in items),
    )  # fmt: skip


def _item_close(stream_ms: int, decision: int, item: str) -> FeedbackRecord:
    """The window-close entry of one item, as versions before per-decision closes logged it."""
    decided = 1_000_000 + 700 * decision
    return logged(
        f"{stream_ms}-0", "a", item, 0.5, propensity=0.25, event_id=f"window-close:d{decision}:{item}", signal=5,
        value=0.0,
        occurred_at_ms=decided + 2_000, decision_id=f"d{decision}", decided_at_ms=decided, window_close=True,
    )  # fmt: skip


def _closing() -> tuple[ServiceConfig, dict]:  # type: ignore[type-arg]
    """Surface "a" (ucb1) with a 2-s window and default reward 0.5, and its policies."""
    reward = {"window_seconds": 2, "default_reward": 0.5}
    config = ServiceConfig.from_dict({"surfaces": {"a": {"algorithm": "ucb1", "items": ITEMS, "reward": reward}}})
    return config, _policies(config)


def _click_on_d0(occurred_ms: int, stream_ms: int) -> FeedbackRecord:
    """Event c1: a click on item i1 of decision d0 (decided at 1_000_000)."""
    return logged(
        f"{stream_ms}-0", "a", "i1", 1.0, event_id="c1", signal=1, value=1.0, occurred_at_ms=occurred_ms,
        decision_id="d0", decided_at_ms=1_000_000,
    )  # fmt: skip


def test_a_decisions_close_learns_its_items_as_the_earlier_per_item_closes_did() -> None:
    """One entry closes the decision's listed items in order; items learned already (by their
    click) or no longer configured are skipped; an earlier version's per-item closes learn the same."""
    config, policies = _closing()
    click = _click_on_d0(1_000_500, 1_001_000)
    one = new_user_state(P, policies, seed=1)
    replay(one, [click], policies, config.surfaces)
    applied = one.learn(policies, config.surfaces, _close(1_003_000, 0, "i4", "i1", "gone", "i2"))
    assert applied is not None and [(c.arm, c.new) for c in applied.changes] == [(4, 0.5), (2, 0.5)]
    per_item = new_user_state(P, policies, seed=1)
    replay(per_item, [click, _item_close(1_003_000, 0, "i4"), _item_close(1_003_001, 0, "i2")], policies,
           config.surfaces)  # fmt: skip
    assert one.policies == per_item.policies and one.ledger.items == per_item.ledger.items
    assert one.ledger.items["a"]["d0/i4"].step == 1 and one.ledger.items["a"]["d0/i2"].step == 2
    assert one.ledger.items["a"]["d0/i2"].propensity == 0.25


def test_a_window_close_teaches_the_default_once_and_later_feedback_corrects_it() -> None:
    config, policies = _closing()
    late_click = _click_on_d0(1_008_000, 1_009_000)
    closed_first = new_user_state(P, policies, seed=1)
    replay(closed_first, [_close(1_003_000, 0, "i1"), late_click], policies, config.surfaces)
    state = closed_first.policies["a"]
    assert state.n_updates == 1 and state.arrays["counts"][1] == 1.0 and state.arrays["reward_sums"][1] == 1.0
    clicked_first = new_user_state(P, policies, seed=1)
    replay(clicked_first, [late_click, _close(1_010_000, 0, "i1")], policies, config.surfaces)
    assert clicked_first.policies["a"] == state  # the close of a learned item changes nothing
    applied = new_user_state(P, policies, seed=1).learn(policies, config.surfaces, _close(1_003_000, 0, "i2"))
    assert applied is not None and applied.reward == 0.5 and [c.new for c in applied.changes] == [0.5]
    # Window-close entries are not the user's actions: no real-time activity, no burst count.
    assert not closed_first.activity.n_events


def test_window_closes_survive_a_snapshot_at_any_point() -> None:
    config = ServiceConfig.from_dict(
        {"surfaces": {"a": {"algorithm": "thompson", "items": ITEMS, "reward": {"window_seconds": 2}}}}
    )
    policies = _policies(config)
    closes = [_close(1_002_500 + 700 * d, d, f"i{d % 6}", f"i{(d + 1) % 6}") for d in range(0, 12, 2)]
    closes += [_item_close(1_002_500 + 700 * d, d, f"i{d % 6}") for d in range(1, 12, 2)]  # an earlier version's
    log = sorted(_fused_log(80, seed=2) + closes, key=lambda r: int(r.stream_id.partition("-")[0]))
    full = new_user_state(P, policies, seed=1)
    replay(full, log, policies, config.surfaces)
    assert_snapshots_agree(full, log, policies, config, cuts=(5, 40, 77))


def test_ledgers_forget_in_batches_past_the_horizon_and_snapshots_agree() -> None:
    """Three weeks of hourly decisions: the ledger keeps about the last 7 days (plus the prune
    slack), and a snapshot at any point plus replay gives the same ledgers and policies."""
    hour = 3_600_000
    config = ServiceConfig.from_dict(
        {"surfaces": {"a": {"algorithm": "ucb1", "items": ITEMS, "reward": {"window_seconds": 600}}}}
    )
    policies = _policies(config)
    log = []
    for k in range(21 * 24):
        decided = 1_000_000 + k * hour
        log.append(
            logged(f"{decided + 60_000}-0", "a", f"i{k % 6}", 0.0, event_id=f"e{k}", signal=1,
                         value=float(k % 3 == 0), occurred_at_ms=decided + 60_000, decision_id=f"d{k}",
                         decided_at_ms=decided)
        )  # fmt: skip
    full = new_user_state(P, policies, seed=1)
    sizes = []
    for r in log:
        replay(full, [r], policies, config.surfaces)
        sizes.append(len(full.ledger.items["a"]))
    assert max(sizes) <= 7 * 24 + 3 and min(sizes[-100:]) >= 7 * 24 - 1, (min(sizes[-100:]), max(sizes))
    assert_snapshots_agree(full, log, policies, config, cuts=(1, 200, 333, 480))


def _clicked_decisions(
    max_age_ms: int, window_seconds: int, count: int, every_ms: int, lag_ms: int
) -> tuple[ServiceConfig, dict[str, Any], UserState, list[int]]:
    """``count`` decisions ``every_ms`` apart, each clicked ``lag_ms`` later, replayed under the
    given horizon and window: the config, policies, state and the ledger's size after each."""
    config = ServiceConfig.from_dict(
        {
            "service": {"quality": {"max_age_ms": max_age_ms}},
            "surfaces": {"a": {"algorithm": "ucb1", "items": ITEMS, "reward": {"window_seconds": window_seconds}}},
        }
    )
    policies = _policies(config)
    state = new_user_state(P, policies, seed=1, quality=config.quality)
    sizes = []
    for k in range(count):
        decided = 1_000_000 + k * every_ms
        r = logged(f"{decided + lag_ms}-0", "a", f"i{k % 6}", 0.0, event_id=f"e{k}", signal=1, value=1.0,
                   occurred_at_ms=decided + lag_ms, decision_id=f"d{k}", decided_at_ms=decided)  # fmt: skip
        replay(state, [r], policies, config.surfaces)
        sizes.append(len(state.ledger.items["a"]))
    return config, policies, state, sizes


def test_the_ledger_horizon_is_the_services_max_age_of_feedback() -> None:
    """With ``quality.max_age_ms`` of 2 days, entries are kept 2 days past their window (not 7), and
    feedback for a decision past that is flagged late and trains nothing."""
    hour, day = 3_600_000, 86_400_000
    config, policies, state, sizes = _clicked_decisions(2 * day, 600, 6 * 24, every_ms=hour, lag_ms=60_000)
    assert max(sizes) <= 2 * 24 + 3 and min(sizes[-48:]) >= 2 * 24 - 1, (min(sizes[-48:]), max(sizes))
    received = 1_000_000 + 6 * 24 * hour
    too_late = logged(f"{received}-0", "a", "i0", 0.0, event_id="late", signal=1, value=1.0,
                      occurred_at_ms=received - hour, decision_id="d0", decided_at_ms=1_000_000)  # fmt: skip
    before = state.policies["a"].copy()
    applied = state.learn(policies, config.surfaces, too_late)
    assert applied is not None and applied.flag == "late: the decision's reward window closed more than 2 days ago"
    assert state.policies["a"] == before
    assert config.settled_ms == 600_000 + 2 * day + 3_600_000


def test_a_horizon_of_minutes_keeps_entries_minutes() -> None:
    """With ``max_age_ms`` of 5 minutes, entries go at most a minute past it (not an hour: the
    prune slack is an eighth of the horizon, at least a minute), and stored entries live as long."""
    minute = 60_000
    # An hour of decisions every 10 s, each clicked 5 s later.
    config, _, _, sizes = _clicked_decisions(5 * minute, 300, 360, every_ms=10_000, lag_ms=5_000)
    # Window 5 min + horizon 5 min = 60 decisions, plus up to a minute (6) before a batch prune.
    assert max(sizes[-200:]) <= 60 + 6 + 1 and min(sizes[-200:]) >= 60 - 1, (min(sizes[-200:]), max(sizes))
    assert config.settled_ms == 10 * minute + minute


def test_an_item_created_by_an_ignored_late_event_closes_the_same_live_and_rebuilt() -> None:
    """The late event creates the item's ledger entry but trains nothing; at the next event past its
    window the item learns the default, in the live run and in one rebuilt from a snapshot."""
    reward = {"window_seconds": 2, "late_rule": "ignore_for_training", "default_reward": 0.5}
    config = ServiceConfig.from_dict({"surfaces": {"a": {"algorithm": "ucb1", "items": ITEMS, "reward": reward}}})
    policies = _policies(config)
    late = logged("1005000-0", "a", "i1", 1.0, event_id="late", value=1.0, occurred_at_ms=1_004_000,
                        decision_id="d0", decided_at_ms=1_000_000)  # fmt: skip
    later = logged("1009000-0", "a", "i2", 1.0, event_id="next", value=1.0, occurred_at_ms=1_009_000)
    # Before it: a learned item and one more event, so the ledger's scan bounds already exist.
    clicked = logged("1000500-0", "a", "i3", 1.0, event_id="click", value=1.0, occurred_at_ms=1_000_400,
                           decision_id="d1", decided_at_ms=1_000_000)  # fmt: skip
    other = logged("1000600-0", "a", "i4", 0.0, event_id="other", value=0.0, occurred_at_ms=1_000_600)
    log = [clicked, other, late, later]
    live = new_user_state(P, policies, seed=1)
    replay(live, log[:3], policies, config.surfaces)
    rebuilt = snapshot_round_trip(live, policies, config.surfaces)
    for state in (live, rebuilt):
        replay(state, log, policies, config.surfaces)
    assert live.policies == rebuilt.policies
    assert live.policies["a"].arrays["reward_sums"].tolist() == [0.0, 0.5, 1.0, 1.0, 0.0, 0.0]
