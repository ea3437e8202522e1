"""The experiment monitor through the real service: a guardrail regression injected into one
variant's traffic stops the experiment by itself, with the reason readable through the API; a ramp
schedule is stepped once its gates pass, without moving anyone."""

from __future__ import annotations

import asyncio
import io
import itertools
import math
import uuid
from pathlib import Path
from typing import Any

import grpc
import matplotlib.image
import numpy as np
import pytest

from rewardloop.client.experiments_cli import main
from rewardloop.v1 import admin_pb2_grpc, assigner_pb2, assigner_pb2_grpc, feedback_pb2, feedback_pb2_grpc
from rewardloop.v1 import experiments_pb2 as xp

pytestmark = pytest.mark.cluster

CLICK = feedback_pb2.SIGNAL_CLICK


def _spec(name: str, **fields: Any) -> xp.ExperimentSpec:
    base: dict[str, Any] = {
        "name": name,
        "layer": f"test-{name}",
        "variants": [xp.Variant(name="control", weight=1), xp.Variant(name="treatment", weight=1)],
        "primary_metric": xp.Metric(source="purchase"),
        "guardrails": [xp.Metric(source="click")],
        "planned_days": 7,
    }
    return xp.ExperimentSpec(**{**base, **fields})


async def _traffic(
    channel: grpc.aio.Channel, name: str, users: list[str], click_rate: dict[str, float], seed: int
) -> dict[str, str]:
    """Each user is assigned (exposed), then clicks with their variant's rate; returns the variants."""
    assigner = assigner_pb2_grpc.AssignerStub(channel)
    feedback = feedback_pb2_grpc.FeedbackStub(channel)
    rng = np.random.default_rng(seed)
    variant_of: dict[str, str] = {}
    for start in range(0, len(users), 50):
        batch = users[start : start + 50]
        replies = await asyncio.gather(
            *(assigner.Assign(assigner_pb2.AssignRequest(user_id=u, experiments=[name]), timeout=10) for u in batch)
        )
        events = []
        for user, reply in zip(batch, replies, strict=True):
            for assignment in reply.assignments:
                variant_of[user] = assignment.variant
                if rng.random() < click_rate[assignment.variant]:
                    events.append(
                        feedback.Record(
                            feedback_pb2.FeedbackEvent(
                                event_id=f"{user}-click", user_id=user, item_id="item-000", signal=CLICK, value=1,
                                surface="ucb",
                            ),
                            timeout=10,
                        )
                    )  # fmt: skip
        await asyncio.gather(*events)
    return variant_of


async def _until(admin: admin_pb2_grpc.AdminStub, name: str, done: Any, seconds: float = 60.0) -> xp.Experiment:
    for _ in range(int(seconds / 0.25)):
        found = await admin.GetExperiment(xp.ExperimentRequest(name=name), timeout=5)
        if done(found):
            return found
        await asyncio.sleep(0.25)
    raise AssertionError(f"experiment {name} never got there: {found}")


async def test_a_guardrail_regression_is_stopped_by_the_monitor(
    admin: admin_pb2_grpc.AdminStub, channel: grpc.aio.Channel, service: Any, tmp_path: Path
) -> None:
    name = f"t-mon-{uuid.uuid4().hex[:8]}"
    # A short planned duration: the monitor records a timeline point at every look (>= 1 s apart).
    await admin.CreateExperiment(xp.CreateExperimentRequest(spec=_spec(name, planned_days=0.001)), timeout=5)
    started = await admin.StartExperiment(xp.ExperimentRequest(name=name), timeout=5)
    # The treatment's users click a third as often: the click guardrail regresses.
    users = [f"{name}-u{i}" for i in range(600)]
    await asyncio.sleep(1.2)  # the front's catalogue refreshes every second
    variant_of = await _traffic(channel, name, users, {"control": 0.6, "treatment": 0.2}, seed=1)
    assert {"control", "treatment"} <= set(variant_of.values())
    stopped = await _until(admin, name, lambda e: e.status == xp.EXPERIMENT_STATUS_STOPPED)
    assert stopped.changed_by == "monitor" and stopped.winner == "control"
    assert stopped.reason.startswith(
        "stopped by the monitor: guardrail click_conversion regressed in variant treatment"
    )
    assert stopped.version > started.version
    history = await admin.GetExperimentHistory(xp.ExperimentHistoryRequest(name=name), timeout=5)
    assert history.changes[0].action == "stop" and history.changes[0].experiment.changed_by == "monitor"
    # The results show why: the guardrail's always-valid test rejected, the SRM test did not.
    results = await admin.GetExperimentResults(xp.ExperimentRequest(name=name), timeout=5)
    (guardrail,) = results.sequential.guardrails
    assert (guardrail.metric, guardrail.variant, guardrail.regression) == ("click_conversion", "treatment", True)
    assert guardrail.p_value <= guardrail.alpha and guardrail.ci_high < 0 and math.isinf(guardrail.ci_low)
    assert not results.sequential.sample_ratio_mismatch and results.sequential.looked_at_ms > 0
    assert {p.metric for p in results.timeline} == {"purchase_conversion", "click_conversion"}
    clicks = [p for p in results.timeline if p.metric == "click_conversion" and not math.isnan(p.relative)]
    assert clicks and clicks[-1].relative < 0 and clicks[-1].relative_ci_high < 0
    # How many looks come before the stop depends on how fast the traffic arrives (one, under a loaded
    # CI run's pace: the first look already had 230 users); the points that came grow.
    assert all(a.users + a.control_users <= b.users + b.control_users for a, b in itertools.pairwise(clicks))
    # The CLI shows the monitor's reading, and plots the effect over time.
    out = io.StringIO()
    assert await asyncio.to_thread(main, ["--target", service.target, "results", name], out) == 0
    assert "click_conversion  treatment  " in out.getvalue() and "YES" in out.getvalue()
    assert "sample ratio (sequential): p = " in out.getvalue()
    png = tmp_path / "effect.png"
    assert (
        await asyncio.to_thread(main, ["--target", service.target, "plot", name, "--out", str(png)], io.StringIO()) == 0
    )
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 200 and image.shape[1] > 200 and image[..., :3].std() > 0.05  # drawn, not blank
    # Stopped: its users are back to the default experience.
    assigner = assigner_pb2_grpc.AssignerStub(channel)
    await asyncio.sleep(1.2)
    reply = await assigner.Assign(assigner_pb2.AssignRequest(user_id=users[0], experiments=[name]), timeout=5)
    assert list(reply.assignments) == []


async def test_a_healthy_variant_is_not_stopped_and_the_ramp_steps_through_its_gates(
    admin: admin_pb2_grpc.AdminStub, channel: grpc.aio.Channel
) -> None:
    name = f"t-mon-{uuid.uuid4().hex[:8]}"
    ramp = [xp.RampStep(coverage=0.3), xp.RampStep(coverage=0.9, hold_hours=1e-4, min_users=120)]
    await admin.CreateExperiment(xp.CreateExperimentRequest(spec=_spec(name, ramp=ramp, coverage=0.9)), timeout=5)
    await admin.StartExperiment(xp.ExperimentRequest(name=name), timeout=5)
    await asyncio.sleep(1.2)
    users = [f"{name}-u{i}" for i in range(1_000)]
    # Too few users yet in each variant (~45 of 300 enrolled at 30%): the gate holds the ramp.
    first = await _traffic(channel, name, users[:300], {"control": 0.4, "treatment": 0.4}, seed=2)
    await asyncio.sleep(1.5)
    held = await admin.GetExperiment(xp.ExperimentRequest(name=name), timeout=5)
    assert (held.status, held.ramp_step, held.coverage) == (xp.EXPERIMENT_STATUS_RUNNING, 0, pytest.approx(0.3))
    results = await admin.GetExperimentResults(xp.ExperimentRequest(name=name), timeout=5)
    assert "users control" in results.sequential.ramp_gate or "users treatment" in results.sequential.ramp_gate
    await _traffic(channel, name, users[300:], {"control": 0.4, "treatment": 0.4}, seed=3)
    ramped = await _until(admin, name, lambda e: e.ramp_step == 1)
    assert ramped.changed_by == "monitor" and ramped.coverage == pytest.approx(0.9)
    assert ramped.status == xp.EXPERIMENT_STATUS_RUNNING and ramped.reason == ""
    # Nobody moved: the users enrolled at 30% keep their variants at 90%.
    await asyncio.sleep(1.2)
    again = await _traffic(channel, name, list(first), {"control": 0.0, "treatment": 0.0}, seed=4)
    assert again == first
