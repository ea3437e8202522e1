"""Byte formats and names that outlive a process: Redis keys, stream fields, snapshots, fingerprints.

Pinned before the issue-9 restructuring: moving modules must not change a byte of them. A change
here is a data migration (old snapshots become stale, priors restart), not a refactor.

Migrations so far: issue 11 left UCB1's selection-only parameters (``c``, ``tuned``) out of the
fingerprint, so the ucb1 surfaces' fingerprints (and the snapshot below, which holds one) changed
once; tuning UCB1 no longer resets its users.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np

from rewardloop.learning.bandits import make_policy
from rewardloop.state import settled
from rewardloop.state.keys import UserKeys, windows_key
from rewardloop.state.records import DecisionRecord, FeedbackRecord
from rewardloop.state.snapshots import encode_snapshot, replay
from rewardloop.state.user_state import new_user_state
from rewardloop.workers.config import ServiceConfig
from tests.conftest import TEST_CONFIG

P = "0123456789abcdef0123456789abcdef"
FINGERPRINTS = {
    "ucb": "3b96a6d3bb96", "ts": "d858e1fd8af4", "eg": "83143c613878", "learn_ucb": "86b8a51ff2be",
    "learn_ts": "fe366a739847", "ctx_linucb": "18a39de7e2ba", "cold_ucb": "86b8a51ff2be", "drift_dts": "05a4ab66d030",
    "drift_ts": "0db17593bf5b", "ope_log": "c1d6021b77e1", "fused": "51c9c16e1696", "true_ts": "fe366a739847",
    "implicit_ts": "b14323241e36", "late_ignored": "f1be2f5b082f", "decayed": "04268cafed02",
    "undecayed": "0a10818c2222", "rt_linucb": "99347350e4c6", "fuzz_items": "38e1304f22ff", "fuzz_ctx": "9fe135567207",
    "ctx_lints": "0ee8bb1760d8", "home_feed": "d858e1fd8af4", "home_feed_ucb": "3b96a6d3bb96",
    "home_feed_egreedy": "83143c613878",
}  # fmt: skip
FIELDS = [
    "e", "e1", "s", "fused", "i", "item-001", "r", "0.75", "g", "2", "v", "15.0", "t", "1000", "d", "d1",
    "x", np.array([1.0, 0.5]).tobytes(), "p", "0.25", "sg", "ios", "dt", "900", "q", "", "k", "close",
]  # fmt: skip
DECISION_JSON = (
    '{"d":"d1","s":"fused","i":["item-001","item-002"],"p":[0.25,0.75],"a":"ucb1","v":"abc.3","t":900,'
    '"x":[1.0,0.5],"sg":"ios","w":1400}'
)
SETTLED_FIELDS = ["d1/item-001 fused 51c9c16e1696", "d2/item-003 ctx_linucb 18a39de7e2ba"]
SETTLED_DEFAULTS = {"d1 fused 51c9c16e1696": b"2:1"}
SETTLED_SHA256 = "2e114b6f71ad1fa308241ede0c42bf3270ab7c0268675866f5d9dbe9943db2b1"
SNAPSHOT_SHA256 = "6626b2c0a9b8b13f20609daacb9f981dbf160ddfe9ed3d66fea2e990fec749eb"  # RLPS v2, learned entries apart


def test_surface_fingerprints() -> None:
    config, default = ServiceConfig.from_dict(TEST_CONFIG), ServiceConfig.load()
    surfaces = {**config.surfaces, **default.surfaces}
    assert {n: surfaces[n].fingerprint for n in FINGERPRINTS} == FINGERPRINTS


def test_log_fields_decision_json_and_key_names() -> None:
    record = FeedbackRecord(
        pseudonym=P, event_id="e1", surface="fused", item_id="item-001", reward=0.75, signal=2, value=15.0,
        occurred_at_ms=1_000, decision_id="d1", features=np.array([1.0, 0.5]).tobytes(), propensity=0.25,
        segment="ios", decided_at_ms=900, flag="", window_close=True,
    )  # fmt: skip
    assert record.fields() == FIELDS
    # One window close per decision lists its items (an entry with "k" and no "c" closes "i" alone).
    close = FeedbackRecord(
        pseudonym=P, event_id="window-close:d1", surface="fused", item_id="", reward=0.25, signal=5,
        occurred_at_ms=1_400, decision_id="d1", decided_at_ms=900, window_close=True,
        closes=(("item-001", 0.25), ("item-002", 0.75)),
    )  # fmt: skip
    assert close.fields()[-4:] == ["c", '[["item-001",0.25],["item-002",0.75]]', "k", "close"]
    pairs = zip(close.fields()[::2], close.fields()[1::2], strict=True)
    raw = {str(k).encode(): v if isinstance(v, bytes) else v.encode() for k, v in pairs}
    assert FeedbackRecord.from_fields(P, "1400-0", raw) == close.appended("1400-0")
    decision = DecisionRecord(
        P, "d1", "fused", ("item-001", "item-002"), (0.25, 0.75), "ucb1", "abc.3", 900, (1.0, 0.5), "ios", 1_400
    )
    assert decision.to_json() == DECISION_JSON
    # The join index keys a record by its id; empty features and segment are left out.
    plain = replace(decision, features=(), segment="")
    assert plain.to_json(keyed=True) == '{"s":"fused","i":["item-001","item-002"],"p":[0.25,0.75],"a":"ucb1",' \
        '"v":"abc.3","t":900,"w":1400}'  # fmt: skip
    assert DecisionRecord.from_json(P, plain.to_json(keyed=True), "d1") == plain
    assert DecisionRecord.from_json(P, DECISION_JSON, "ignored") == decision
    keys = UserKeys(P)
    prefix = "rl:{" + P + "}:"
    assert (keys.feedback_log, keys.decision_log, keys.decision_index, keys.snapshot) == (
        prefix + "fb", prefix + "dec", prefix + "join", prefix + "snap"
    )  # fmt: skip
    assert (keys.event_ids, keys.settled) == (prefix + "ids", prefix + "led")
    # Written by earlier versions, still read.
    assert (keys.day_event_ids(20_000), keys.legacy_decision_index, keys.legacy_event("e1")) == (
        prefix + "ids:20000", prefix + "dix", prefix + "ev:e1"
    )  # fmt: skip
    assert (keys.day_decision_index(20_000), keys.day_settled(20_000)) == (prefix + "dix:20000", prefix + "led:20000")
    assert (keys.pattern, windows_key(3)) == (prefix + "*", "rl:windows:3")


def test_snapshot_bytes_after_a_fixed_replay() -> None:
    config = ServiceConfig.from_dict(TEST_CONFIG)
    surfaces = {n: config.surfaces[n] for n in ("fused", "ctx_linucb", "decayed")}
    policies = {
        n: make_policy(s.policy_config, len(s.items), context_dim=s.context_dim, arm_features=s.item_feature_matrix())
        for n, s in surfaces.items()
    }
    x = np.arange(9, dtype="<f8").tobytes()
    log = [
        FeedbackRecord(pseudonym=P, event_id="a", surface="fused", item_id="item-001", reward=0.5, signal=2, value=15.0,
                       occurred_at_ms=990, decision_id="d1", decided_at_ms=900, propensity=0.5, stream_id="1000-0"),
        FeedbackRecord(pseudonym=P, event_id="close", surface="fused", item_id="item-002", reward=0.25, signal=5,
                       occurred_at_ms=1400, decision_id="d1", decided_at_ms=900, propensity=0.5, window_close=True,
                       stream_id="1200-0"),
        FeedbackRecord(pseudonym=P, event_id="b", surface="ctx_linucb", item_id="item-003", reward=1.0, features=x,
                       propensity=0.1, value=1.0, occurred_at_ms=1300, decision_id="d2", decided_at_ms=1250,
                       stream_id="1300-0"),
        FeedbackRecord(pseudonym=P, event_id="c", surface="decayed", item_id="item-000", reward=1.0, value=1.0,
                       occurred_at_ms=1400, stream_id="1400-0"),
    ]  # fmt: skip
    state = new_user_state(P, policies, seed=1)
    replay(state, log, policies, surfaces)
    # A snapshot once every window closed: the learned entries are stored beside it (state/settled.py).
    stored, defaults = settled.stored_fields(surfaces, state.ledger.settle(surfaces, 100_000_000))
    assert hashlib.sha256(encode_snapshot(state, policies, surfaces)).hexdigest() == SNAPSHOT_SHA256
    # The learned ledger entries, stored beside the snapshot (state/settled.py).
    assert sorted(stored) == SETTLED_FIELDS
    # Items without events (item-002: its window closed empty) are one field per decision.
    assert defaults == SETTLED_DEFAULTS
    flat = b"".join(f.encode() + b"=" + v + b";" for f, v in sorted(stored.items()))
    assert hashlib.sha256(flat).hexdigest() == SETTLED_SHA256
