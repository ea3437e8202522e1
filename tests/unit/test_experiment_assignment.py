"""Experiments' definitions, sticky allocation across ramps and allocation changes, layers, targeting."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from rewardloop.learning.experiments import lifecycle
from rewardloop.learning.experiments.assigner import Assigner
from rewardloop.learning.experiments.buckets import BUCKETS, Allocation, bucket_of, resize
from rewardloop.learning.experiments.lifecycle import Experiment, LifecycleError, layer_free
from rewardloop.learning.experiments.spec import spec_from_dict, spec_to_dict
from rewardloop.learning.params import ConfigError

USERS = [f"user-{i}" for i in range(20_000)]


def _spec(name: str = "e", **raw: object) -> dict[str, object]:
    return {"variants": {"control": 1, "treatment": 1}, "primary_metric": {"source": "click"}, **raw}


def _started(catalog: dict[str, Experiment], name: str, **raw: object) -> Experiment:
    spec = spec_from_dict(name, _spec(**raw))
    experiment = lifecycle.start(lifecycle.create(spec, 0), layer_free(catalog, spec.layer_key, name), 1)
    catalog[name] = experiment
    return experiment


BAD_SPECS = [
    ({"variants": {"a": 1}}, "variants must name at least two"),
    ({"variants": {"a": 1, "b": 0}}, r"variants.b must be in \(0"),
    ({"variants": {"a": 1, "b": "x"}}, "variants.b must be a number"),
    ({"coverage": 1.5}, r"coverage must be in \(0, 1\], got 1.5"),
    ({"coverage": 0}, r"coverage must be in \(0, 1\]"),
    ({"alpha": 0.7}, r"alpha must be in \(0, 0.5\]"),
    ({"power": 0.2}, r"power must be in \[0.5, 0.999\]"),
    ({"mde": -1}, r"mde must be in \(0"),
    ({"planned_days": float("nan")}, "planned_days must be a number"),
    ({"layer": "bad layer"}, "layer: name 'bad layer'"),
    ({"primary_metric": {"source": "click", "aggregate": "median"}}, "primary_metric.aggregate must be one of"),
    ({"primary_metric": {"aggregate": "sum"}}, "primary_metric.source is required"),
    ({"primary_metric": {"source": "click", "colour": 1}}, r"primary_metric: unknown key\(s\) colour"),
    ({"guardrails": [{"source": "skip", "tolerance": 2}]}, r"guardrails\[0\].tolerance must be in \[0, 1\]"),
    ({"guardrails": [{"source": "click"}]}, "metric names must differ"),
    ({"targeting": [{"attribute": "country", "operator": "like", "values": ["x"]}]}, r"targeting\[0\].operator"),
    ({"targeting": [{"attribute": "age", "operator": "gt", "values": ["old"]}]}, r"targeting\[0\].values must be a"),
    ({"targeting": [{"attribute": "c", "operator": "eq", "values": ["a", "b"]}]}, "exactly one value"),
    ({"ramp": [{"coverage": 0.5}, {"coverage": 0.2}]}, "coverages must increase"),
    ({"ramp": [{"coverage": 0.5}], "coverage": 0.3}, "exceeds coverage"),
    ({"ramp": [{"coverage": 0.1, "hold": 3}]}, r"ramp\[0\]: unknown key\(s\) hold"),
    ({"colour": "red"}, r"unknown key\(s\) colour"),
]


@pytest.mark.parametrize(("raw", "message"), BAD_SPECS)
def test_bad_specs_name_the_field(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        spec_from_dict("e", _spec(**raw))


def test_spec_round_trips_through_its_stored_form() -> None:
    spec = spec_from_dict(
        "e",
        _spec(
            layer="ranking", coverage=0.5, surfaces=["home"],
            guardrails=[{"source": "skip", "higher_is_better": False}],
            targeting=[{"attribute": "country", "operator": "in", "values": ["de", "fr"]}],
            ramp=[{"coverage": 0.1, "hold_hours": 2}, {"coverage": 0.5}], metadata={"owner": "search"},
        ),
    )  # fmt: skip
    assert spec_from_dict("e", spec_to_dict(spec)) == spec
    experiment = lifecycle.start(lifecycle.create(spec, 5), np.ones(BUCKETS, dtype=bool), 6)
    assert Experiment.from_dict("e", experiment.to_dict()) == experiment


def _variants(allocation: Allocation) -> np.ndarray:
    """Bucket -> variant index (-1: not enrolled)."""
    out = np.full(BUCKETS, -1)
    for i, (_, ranges) in enumerate(sorted(allocation.variants)):
        for s, e in ranges:
            out[s:e] = i
    return out


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.floats(0.01, 1.0), st.floats(0.1, 10.0), st.floats(0.1, 10.0), st.floats(0.1, 10.0)),
        min_size=1,
        max_size=8,
    ),
    taken=st.floats(0.0, 0.9),
)
def test_no_resize_moves_a_bucket_to_another_variant(
    steps: list[tuple[float, float, float, float]], taken: float
) -> None:
    """Any sequence of ramps and re-weightings (a third variant joining midway), with part of the
    layer held by another experiment: a bucket that left a variant never enrols again."""
    free = np.ones(BUCKETS, dtype=bool)
    free[: int(taken * BUCKETS)] = False
    allocation = Allocation.empty(("a", "b"))
    history = np.full(BUCKETS, -1)
    left = np.zeros(BUCKETS, dtype=bool)
    for i, (coverage, wa, wb, wc) in enumerate(steps):
        weights = {"a": wa, "b": wb} if i < 2 else {"a": wa, "b": wb, "c": wc}
        allocation = resize(allocation, weights, coverage, free)
        now = _variants(allocation)
        assert not (now[left] >= 0).any(), "a retired bucket came back"
        moved = (history >= 0) & (now >= 0) & (history != now)
        assert not moved.any(), "a bucket changed variant"
        left |= (history >= 0) & (now < 0)
        history = np.where(now >= 0, now, history)
        assert not (now[~free] >= 0).any(), "took a bucket the layer did not have free"
        assert allocation.enrolled() <= round(coverage * BUCKETS)
        counts = allocation.counts()
        whole = sum(weights.values())
        for variant, weight in weights.items():
            assert abs(counts[variant] - allocation.enrolled() * weight / whole) < 1 + 1e-9, "split is off"
        if i == 0 and round(coverage * BUCKETS) <= free.sum():
            assert allocation.enrolled() == round(coverage * BUCKETS)


def test_ramp_keeps_every_user_in_their_variant_through_the_service_path() -> None:
    """The issue's ramp test: users assigned at 10% keep their variant at 50% and 100%, and a change
    of allocation (50/50 -> 20/80) at 50% moves nobody."""
    spec = spec_from_dict("ramped", _spec(ramp=[{"coverage": 0.1}, {"coverage": 0.5}, {"coverage": 1.0}]))
    free = np.ones(BUCKETS, dtype=bool)
    experiment = lifecycle.start(lifecycle.create(spec, 0), free, 1)
    at = {}
    for step in range(3):
        assigner = Assigner([experiment])
        now = {u: a[0][1] for u in USERS if (a := assigner.assign(u))}
        assert len(now) == pytest.approx(len(USERS) * experiment.coverage, rel=0.08)
        for earlier in at.values():
            assert all(now[u] == v for u, v in earlier.items())
        at[step] = now
        if step < 2:
            experiment = lifecycle.ramp(experiment, free, 2 + step)
    reweighted = spec_from_dict(
        "ramped", _spec(variants={"control": 1, "treatment": 4}, ramp=spec_to_dict(spec)["ramp"])
    )
    half = lifecycle.ramp(lifecycle.start(lifecycle.create(spec, 0), free, 1), free, 2)
    assigner = Assigner([half])
    before = {u: a[0][1] for u in USERS if (a := assigner.assign(u))}
    after_change = lifecycle.update(half, reweighted, free, 3)
    assigner = Assigner([after_change])
    after = {u: a[0][1] for u in USERS if (a := assigner.assign(u))}
    assert all(before.get(u, v) == v for u, v in after.items()), "a user moved to another variant"
    assert all(after.get(u, v) == v for u, v in before.items() if u in after)
    # The layer had room (50% free): treatment grew from new users, control lost some to retirement.
    shares = after_change.allocation.shares()
    assert shares["treatment"] == pytest.approx(0.8, abs=0.001)
    assert after_change.allocation.enrolled() == BUCKETS // 2


def test_layers_exclude_within_and_are_independent_across() -> None:
    catalog: dict[str, Experiment] = {}
    _started(catalog, "a", layer="ranking", coverage=0.5)
    _started(catalog, "b", layer="ranking", coverage=0.5)
    _started(catalog, "c", layer="ui")
    _started(catalog, "d")
    assigner = Assigner(catalog.values())
    rows = [dict(assigner.assign(u)) for u in USERS]
    assert not any("a" in r and "b" in r for r in rows), "two experiments of one layer shared a user"
    assert sum("a" in r or "b" in r for r in rows) == pytest.approx(len(USERS), rel=0.02)
    # Across layers the variants are independent: chi-square on the 2x2 table of c and d's variants.
    table = np.zeros((2, 2))
    for r in rows:
        table[r["c"] == "treatment", r["d"] == "treatment"] += 1
    assert stats.chi2_contingency(table).pvalue > 0.001
    shares = [sum(r.get(e) == "treatment" for r in rows) / len(USERS) for e in "cd"]
    assert shares == pytest.approx([0.5, 0.5], abs=0.02)


def test_a_full_layer_refuses_a_new_experiment() -> None:
    catalog: dict[str, Experiment] = {}
    _started(catalog, "a", layer="full")
    spec = spec_from_dict("b", _spec(layer="full"))
    with pytest.raises(LifecycleError, match="no free traffic"):
        lifecycle.start(lifecycle.create(spec, 0), layer_free(catalog, "full", "b"), 1)
    catalog["a"] = lifecycle.stop(catalog["a"], 2)
    assert (
        lifecycle.start(lifecycle.create(spec, 0), layer_free(catalog, "full", "b"), 3).allocation.enrolled() == BUCKETS
    )


def test_assigner_matches_the_per_layer_reference() -> None:
    """The compiled, vectorised lookup against the definition: the user's bucket in each layer."""
    catalog: dict[str, Experiment] = {}
    for i in range(12):
        _started(catalog, f"e{i}", layer=f"l{i % 4}", coverage=0.3, variants={"x": 1, "y": 2, "z": 1})
    assigner = Assigner(catalog.values())
    owners = {
        (e.name, v): {b for s, end in ranges for b in range(s, end)}
        for e in catalog.values()
        for v, ranges in e.allocation.variants
    }
    for user in USERS[:2000]:
        buckets = {layer: bucket_of(f"layer:{layer}", user) for layer in ("l0", "l1", "l2", "l3")}
        expected = [key for key, ids in owners.items() if buckets[catalog[key[0]].spec.layer] in ids]
        assert assigner.assign(user) == sorted(expected)


def test_targeting_and_filters() -> None:
    catalog: dict[str, Experiment] = {}
    _started(
        catalog, "t", surfaces=["home"],
        targeting=[{"attribute": "country", "operator": "in", "values": ["de", "at"]},
                   {"attribute": "age", "operator": "ge", "values": ["18"]}],
    )  # fmt: skip
    _started(catalog, "u", targeting=[{"attribute": "plan", "operator": "ne", "values": ["free"]}])
    assigner = Assigner(catalog.values())
    user = "someone"
    assert [e for e, _ in assigner.assign(user, {"country": "de", "age": "30"})] == ["t", "u"]
    assert [e for e, _ in assigner.assign(user, {"country": "fr", "age": "30"})] == ["u"]
    assert [e for e, _ in assigner.assign(user, {"country": "de", "age": "17.5", "plan": "free"})] == []
    assert [e for e, _ in assigner.assign(user, {"country": "de", "age": "x"})] == ["u"]
    assert [e for e, _ in assigner.assign(user, {"country": "de", "age": "30"}, surface="home")] == ["t"]
    assert [e for e, _ in assigner.assign(user, {"country": "de", "age": "30"}, only={"u"})] == ["u"]
    assert assigner.covering("home") and not assigner.covering("other")


def test_split_follows_the_weights() -> None:
    catalog: dict[str, Experiment] = {}
    _started(catalog, "w", variants={"a": 1, "b": 3}, coverage=0.4)
    assigner = Assigner(catalog.values())
    counts = {"a": 0, "b": 0}
    for user in USERS:
        for _, v in assigner.assign(user):
            counts[v] += 1
    n = len(USERS)
    for variant, share in (("a", 0.1), ("b", 0.3)):
        assert abs(counts[variant] - n * share) < 4 * math.sqrt(n * share * (1 - share))


LIFECYCLE_ERRORS = [
    (lambda e, f: lifecycle.start(lifecycle.stop(e, 9), f, 10), "is stopped"),
    (lambda e, f: lifecycle.start(e, f, 10), "already running"),
    (lambda e, f: lifecycle.pause(lifecycle.pause(e, 9), 10), "is paused, not running"),
    (lambda e, f: lifecycle.stop(e, 9, winner="nope"), "winner"),
    (lambda e, f: lifecycle.ramp(e, f, 9), "last step of its ramp"),
    (lambda e, f: lifecycle.ramp(e, f, 9, coverage=0.9), r"coverage must be in \(0, 0.5\]"),
    (lambda e, f: lifecycle.update(e, spec_from_dict("e", _spec(layer="other", coverage=0.5)), f, 9), "layer cannot"),
    (
        lambda e, f: lifecycle.update(e, spec_from_dict("e", _spec(variants={"control": 1, "x": 1})), f, 9),
        "cannot be removed",
    ),
    (
        lambda e, f: lifecycle.update(e, spec_from_dict("e", _spec(variants={"treatment": 1, "control": 1})), f, 9),
        "control",
    ),
]


@pytest.mark.parametrize(("change", "message"), LIFECYCLE_ERRORS)
def test_lifecycle_refuses_what_the_state_does_not_allow(change: object, message: str) -> None:
    spec = spec_from_dict("e", _spec(coverage=0.5))
    free = np.ones(BUCKETS, dtype=bool)
    running = lifecycle.start(lifecycle.create(spec, 0), free, 1)
    with pytest.raises(LifecycleError, match=message):
        change(running, free)  # type: ignore[operator]


def test_pause_keeps_users_for_when_it_resumes() -> None:
    free = np.ones(BUCKETS, dtype=bool)
    running = lifecycle.start(lifecycle.create(spec_from_dict("p", _spec(coverage=0.3)), 0), free, 1)
    assigner = Assigner([running])
    before = [assigner.assign(u) for u in USERS[:3000]]
    paused = lifecycle.pause(running, 2, "investigating")
    assert Assigner([paused]).names == frozenset()
    resumed = Assigner([lifecycle.start(paused, free, 3)])
    assert [resumed.assign(u) for u in USERS[:3000]] == before
    assert (paused.version, paused.reason) == (3, "investigating")


def test_a_holdouts_first_variant_gets_no_other_experiment() -> None:
    catalog: dict[str, Experiment] = {}
    _started(catalog, "hold", holdout=True, variants={"held": 1, "exposed": 9}, coverage=0.5)
    _started(catalog, "a", layer="ranking")
    _started(catalog, "b", layer="ui", coverage=0.5)
    _started(catalog, "c", targeting=[{"attribute": "country", "operator": "eq", "values": ["de"]}])
    assigner = Assigner(catalog.values())
    without = Assigner([e for e in catalog.values() if e.name != "hold"])
    held = 0
    for user in USERS[:5000]:
        got = dict(assigner.assign(user, {"country": "de"}))
        if got.get("hold") == "held":
            held += 1
            assert got == {"hold": "held"}, "a held-out user was given another experiment"
            assert assigner.assign(user, {"country": "de"}, only={"a"}) == []
        else:
            # Everyone else is assigned exactly as if there were no holdout.
            assert {k: v for k, v in got.items() if k != "hold"} == dict(without.assign(user, {"country": "de"}))
    assert held / 5000 == pytest.approx(0.05, abs=0.01)  # 10% of half the users


def test_a_holdout_holds_out_only_the_users_it_targets() -> None:
    catalog: dict[str, Experiment] = {}
    _started(catalog, "hold", holdout=True, targeting=[{"attribute": "country", "operator": "eq", "values": ["de"]}])
    _started(catalog, "a", layer="ranking")
    assigner = Assigner(catalog.values())
    user = next(u for u in USERS if dict(assigner.assign(u, {"country": "de"})).get("hold") == "control")
    assert [e for e, _ in assigner.assign(user, {"country": "fr"})] == ["a"]
    assert [e for e, _ in assigner.assign(user, {"country": "de"})] == ["hold"]


def test_a_holdout_needs_its_own_layer() -> None:
    with pytest.raises(ConfigError, match="holdout: a holdout needs a layer of its own"):
        spec_from_dict("h", _spec(holdout=True, layer="ranking"))


def test_segment_targeting_asks_for_segments_only_when_the_users_bucket_needs_them() -> None:
    catalog: dict[str, Experiment] = {}
    _started(catalog, "seg", coverage=0.5,
             targeting=[{"attribute": "segment.home", "operator": "in", "values": ["2"]}])  # fmt: skip
    _started(catalog, "plain", layer="other")
    assigner = Assigner(catalog.values())
    needs = [bool(assigner.segments_needed(u)) for u in USERS[:4000]]
    assert sum(needs) / 4000 == pytest.approx(0.5, abs=0.03)  # the users whose bucket "seg" holds
    user = USERS[needs.index(True)]
    assert assigner.segments_needed(user) == ("home",)
    assert [e for e, _ in assigner.assign(user, {"segment.home": "2"})] == ["plain", "seg"]
    assert [e for e, _ in assigner.assign(user, {"segment.home": "1"})] == ["plain"]
    assert [e for e, _ in assigner.assign(user)] == ["plain"]  # segment unknown: not targeted
    assert Assigner([catalog["plain"]]).segments_needed(user) == ()
