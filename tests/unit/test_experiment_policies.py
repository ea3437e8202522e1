"""Policy experiments, the pure parts: a variant's policies in the spec (checks naming the field,
the stored form's round trip, old records), their freeze once started, the Admin conversion and its
checks against the service's surfaces, and a variant's state in the user's state and snapshot."""

from __future__ import annotations

import json
from typing import Any

import grpc
import numpy as np
import pytest

from rewardloop.learning.bandits import make_policy
from rewardloop.learning.experiments import lifecycle
from rewardloop.learning.experiments.buckets import BUCKETS
from rewardloop.learning.experiments.policies import SurfacePolicy, is_variant_key, policy_key
from rewardloop.learning.experiments.spec import spec_from_dict, spec_to_dict
from rewardloop.learning.params import ConfigError
from rewardloop.server.admin.experiments import spec_message, spec_of
from rewardloop.server.status import ServiceError
from rewardloop.state.records import DecisionRecord, FeedbackRecord
from rewardloop.state.snapshots import encode_snapshot, replay, replay_start, restore_from_snapshot
from rewardloop.state.user_state import new_user_state
from rewardloop.v1 import experiments_pb2 as xp
from rewardloop.workers.config import ServiceConfig

ITEMS = [f"i{k}" for k in range(5)]
P = "ab" * 16  # a pseudonym: 32 hex digits
BASE: dict[str, Any] = {
    "variants": {"control": 1, "treatment": 1},
    "primary_metric": {"source": "click", "aggregate": "count"},
    "surfaces": ["home"],
}
POLICIES = {
    "control": {"home": {"algorithm": "epsilon_greedy", "params": {"epsilon": 1.0}}},
    "treatment": {"home": {"algorithm": "thompson"}},
}
CONFIG = ServiceConfig.from_dict(
    {
        "surfaces": {
            "home": {"algorithm": "ucb1", "params": {"c": 0.5}, "items": ITEMS},
            "ctx": {"algorithm": "linucb", "items": ITEMS, "features": {"numeric": ["x"]}},
            "decayed": {"algorithm": "thompson", "items": ITEMS, "reward": {"half_life_seconds": 3600}},
            "bot": {"kind": "agent", "items": ["a", "b"], "features": {"numeric": ["f"]}},
        }
    }
)


def test_policies_round_trip_through_the_stored_form() -> None:
    spec = spec_from_dict("pe", {**BASE, "policies": POLICIES})
    assert spec.policy_of("control", "home") == SurfacePolicy("epsilon_greedy", {"epsilon": 1})
    assert spec.policy_of("treatment", "home") is not None and spec.policy_of("treatment", "other") is None
    stored = json.loads(json.dumps(spec_to_dict(spec)))
    assert stored["policies"]["treatment"] == {"home": {"algorithm": "thompson", "params": {}}}
    assert spec_from_dict("pe", stored) == spec


def test_a_record_without_policies_loads_and_is_stored_as_before() -> None:
    spec = spec_from_dict("old", BASE)
    assert spec.policies == {} and "policies" not in spec_to_dict(spec)
    assert spec_from_dict("old", {**BASE, "policies": {}}) == spec


@pytest.mark.parametrize(
    ("policies", "match"),
    [
        ({"treatment": {"home": {"algorithm": "ucb1", "params": {"c": -1}}}},
         r"^variants\[1\]\.policies\.home\.params\.c: must be > 0, got -1"),
        ({"control": {"home": {"algorithm": "epsilon_greedy", "params": {"epsilon": 1.5}}}},
         r"^variants\[0\]\.policies\.home\.params\.epsilon: must be in \[0, 1\]"),
        ({"treatment": {"home": {"algorithm": "nope"}}}, r"^variants\[1\]\.policies\.home\.algorithm: unknown"),
        ({"treatment": {"home": {"algorithm": ""}}}, r"^variants\[1\]\.policies\.home\.algorithm: unknown"),
        ({"treatment": {"home": {"algorithm": "ucb1", "params": {"alpha": 1}}}},
         r"^variants\[1\]\.policies\.home\.params\.alpha: unknown parameter for ucb1; known: c, tuned"),
        ({"treatment": {"home": {"algorithm": "ucb1", "params": {"c": float("inf")}}}},
         r"^variants\[1\]\.policies\.home\.params\.c: must be a finite number"),
        ({"treatment": {"home": {"algorithm": "sliding_window_ucb", "params": {"window": 2.5}}}},
         r"^variants\[1\]\.policies\.home\.params\.window: must be an integer"),
        ({"treatment": {"home": {"algorithm": "ucb1", "x": 1}}}, r"^variants\[1\]\.policies\.home: unknown key"),
        ({"treatment": {"home": "ucb1"}}, r"^variants\[1\]\.policies\.home: must be a table"),
        ({"treatment": {"other": {"algorithm": "ucb1"}}},
         r"^variants\[1\]\.policies\.other: surface 'other' must be listed in surfaces"),
        ({"treatment": {"bad name": {"algorithm": "ucb1"}}}, r"^variants\[1\]\.policies: name 'bad name'"),
        ({"nobody": {"home": {"algorithm": "ucb1"}}}, r"^policies: 'nobody' is not a variant"),
        ({"treatment": ["home"]}, r"^variants\[1\]\.policies must map"),
        ("ucb1", r"^policies must map"),
    ],
)  # fmt: skip
def test_bad_policies_are_refused_naming_the_field(policies: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        spec_from_dict("pe", {**BASE, "policies": policies})


def test_a_switch_parameter_reads_from_a_number() -> None:
    assert SurfacePolicy("ucb1", {"tuned": 0.0}).config.tuned is False  # type: ignore[attr-defined]
    assert SurfacePolicy("ucb1", {"c": 2.0}).params == {"c": 2}


def test_policies_are_frozen_once_started() -> None:
    spec = spec_from_dict("pe", {**BASE, "policies": POLICIES})
    free = np.ones(BUCKETS, dtype=bool)
    draft = lifecycle.create(spec, 1)
    changed = spec_from_dict("pe", {**BASE, "policies": {**POLICIES, "treatment": {"home": {"algorithm": "ucb1"}}}})
    assert lifecycle.update(draft, changed, free, 2).spec == changed  # a draft may change anything
    running = lifecycle.start(draft, free, 3)
    with pytest.raises(lifecycle.LifecycleError, match=r"policies of \['treatment'\] cannot change"):
        lifecycle.update(running, changed, free, 4)
    with pytest.raises(lifecycle.LifecycleError, match=r"policies of \['control', 'treatment'\]"):
        lifecycle.update(running, spec_from_dict("pe", BASE), free, 4)
    # A variant added later may bring its own policy; the others' stay as they were.
    grown = spec_from_dict(
        "pe",
        {**BASE, "variants": {"control": 1, "treatment": 1, "third": 1},
         "policies": {**POLICIES, "third": {"home": {"algorithm": "ucb1"}}}},
    )  # fmt: skip
    assert lifecycle.update(running, grown, free, 5).spec == grown


def _message(**variant_policies: dict[str, xp.SurfacePolicy]) -> xp.ExperimentSpec:
    variants = [
        xp.Variant(name=name, weight=1, policies=variant_policies.get(name, {})) for name in ("control", "treatment")
    ]
    surfaces = sorted({s for p in variant_policies.values() for s in p} | {"home"})
    return xp.ExperimentSpec(
        name="pe", variants=variants, surfaces=surfaces, primary_metric=xp.Metric(source="click", aggregate="count")
    )


def test_admin_conversion_round_trips_and_resolves_the_surfaces_own_algorithm() -> None:
    message = _message(
        control={"home": xp.SurfacePolicy(algorithm="epsilon_greedy", params={"epsilon": 1.0})},
        treatment={"home": xp.SurfacePolicy(params={"c": 2.0})},  # ucb1, the surface's own, with another c
    )
    spec = spec_of(message, CONFIG)
    assert spec.policy_of("treatment", "home") == SurfacePolicy("ucb1", {"c": 2, "tuned": True})
    back = spec_message(spec)
    assert back.variants[0].policies["home"] == xp.SurfacePolicy(algorithm="epsilon_greedy", params={"epsilon": 1.0})
    assert back.variants[1].policies["home"] == xp.SurfacePolicy(algorithm="ucb1", params={"c": 2.0, "tuned": 1.0})
    assert spec_of(back, CONFIG) == spec


@pytest.mark.parametrize(
    ("policies", "field", "match"),
    [
        ({"home": xp.SurfacePolicy(algorithm="ucb1", params={"c": -1.0})},
         "spec.variants[1].policies.home.params.c", "must be > 0"),
        ({"home": xp.SurfacePolicy(algorithm="epsilon_greedy", params={"alpha": 1.0})},
         "spec.variants[1].policies.home.params.alpha", "unknown parameter"),
        ({"home": xp.SurfacePolicy(algorithm="hybrid_linucb")},
         "spec.variants[1].policies.home.algorithm", "hybrid_linucb cannot serve surface 'home'"),
        ({"decayed": xp.SurfacePolicy(algorithm="discounted_ucb")},
         "spec.variants[1].policies.decayed.algorithm", "time decay needs"),
        ({"bot": xp.SurfacePolicy()},
         "spec.variants[1].policies.bot.algorithm", "'bot' is an agent surface: a variant's policy names a bandit"),
        ({"bot": xp.SurfacePolicy(algorithm="dqn")}, "spec.variants[1].policies.bot.algorithm", "unknown algorithm"),
        ({"nowhere": xp.SurfacePolicy()}, "spec.variants[1].policies.nowhere", "unknown surface 'nowhere'"),
        ({"nowhere": xp.SurfacePolicy(algorithm="ucb1")}, "spec.surfaces[1]", "unknown surface 'nowhere'"),
    ],
)  # fmt: skip
def test_admin_refuses_policies_the_surface_cannot_take(policies: dict[str, Any], field: str, match: str) -> None:
    with pytest.raises(ServiceError) as refused:
        spec_of(_message(treatment=policies), CONFIG)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.violations[0].field == field
    assert match in refused.value.message


def test_a_bandit_variant_may_decide_an_agent_surface() -> None:
    """Bandit vs agent: a contextual bandit over the agent's actions and request features."""
    spec = spec_of(_message(treatment={"bot": xp.SurfacePolicy(algorithm="lin_ts")}), CONFIG)
    assert spec.policy_of("treatment", "bot") == SurfacePolicy("lin_ts", {})
    assert spec.policy_of("control", "bot") is None  # the agent decides for the control
    derived = CONFIG.surfaces["bot"].deciding_with("bot@pe/treatment/1", spec.policies["treatment"]["bot"].config)
    assert (derived.kind, derived.agent, derived.context_dim) == ("bandit", None, CONFIG.surfaces["bot"].context_dim)


def test_admin_lists_a_policy_surface_or_refuses() -> None:
    message = _message(treatment={"home": xp.SurfacePolicy(algorithm="ucb1")})
    del message.surfaces[:]
    with pytest.raises(ServiceError) as refused:
        spec_of(message, CONFIG)
    assert refused.value.violations[0].field == "spec.variants[1].policies.home"
    assert "must be listed in surfaces" in refused.value.message


def test_a_variants_state_lives_beside_the_surfaces_and_goes_with_its_variant() -> None:
    """Its own key in the user's state, trained by the entries of its decisions only; stored in the
    snapshot while served, rebuilt from the log after it (never as stale), dropped once not served."""
    surface = CONFIG.surfaces["home"]
    key = policy_key("home", "pe", "treatment", 7)
    assert is_variant_key(key) and not is_variant_key("home")
    variant = surface.deciding_with(key, SurfacePolicy("thompson").config)
    assert (variant.name, variant.policy_config.name, variant.items) == (key, "thompson", surface.items)
    policies = {"home": make_policy(surface.policy_config, len(ITEMS))}
    served = {**policies, key: make_policy(variant.policy_config, len(ITEMS))}
    surfaces = {"home": surface, key: variant}
    state = new_user_state(P, served, seed=1)
    assert set(state.policies) == {"home"}  # a variant's state starts at its first use
    decision = DecisionRecord(P, "d1", "home", ("i2",), (0.5,), "thompson", "v", 1, policy_key=key)
    assert DecisionRecord.from_json(P, decision.to_json()) == decision
    log = [
        FeedbackRecord(P, "e1", "home", "i2", 1.0, stream_id="10-0", policy_key=key),
        FeedbackRecord(P, "e2", "home", "i3", 1.0, stream_id="11-0"),
        FeedbackRecord(P, "e3", "home", "i2", 1.0, stream_id="12-0", policy_key=key),
    ]
    replay(state, log[:1], served, surfaces)
    assert state.policies[key].n_updates == 1 and state.policies["home"].n_updates == 0
    blob = encode_snapshot(state, served, surfaces)
    replay(state, log[1:], served, surfaces)
    back = restore_from_snapshot(blob, P, served, surfaces, seed=1)
    assert back.stale == frozenset() and replay_start(back) == "(10-0"
    replay(back, log[1:], served, surfaces)
    for name in ("home", key):
        assert back.policies[name].n_updates == state.policies[name].n_updates
        np.testing.assert_array_equal(back.policies[name].arrays["counts"], state.policies[name].arrays["counts"])
    # Not served any more (the experiment stopped): not restored, and dropped from a state in memory.
    assert set(restore_from_snapshot(blob, P, policies, {"home": surface}, seed=1).policies) == {"home"}
    assert state.forget_unserved(policies) and set(state.policies) == {"home"} and key not in state.ledger.items
    assert state.dirty
    # An entry of a variant no longer served trains nothing.
    assert state.learn(policies, {"home": surface}, log[2]) is None and set(state.policies) == {"home"}
