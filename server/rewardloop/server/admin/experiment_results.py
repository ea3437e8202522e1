"""Admin, experiments area: an experiment's results (`GetExperimentResults`).

The fixed-horizon table (`learning/experiments/results.py`) from the streaming sums, beside the
experiment monitor's sequential reading and the effect-over-time timeline it records.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from rewardloop.learning.experiments.lifecycle import Experiment
from rewardloop.learning.experiments.monitor import MonitorState
from rewardloop.learning.experiments.results import MetricResult, analyse, effect_timeline
from rewardloop.server.admin.experiments import check_experiment_name, experiment_message
from rewardloop.server.status import failed_precondition, not_found, quote
from rewardloop.state.experiment_metrics import VariantSums, read_stats
from rewardloop.state.experiment_monitor import MonitorStore, Point
from rewardloop.state.experiments import ExperimentStore, now_ms
from rewardloop.v1 import experiments_pb2
from rewardloop.workers.config import ServiceConfig


def results_message(
    experiment: Experiment,
    sums: dict[str, VariantSums],
    at_ms: int,
    monitor: MonitorState | None = None,
    timeline: Sequence[Point] = (),
) -> experiments_pb2.ExperimentResults:
    spec = experiment.spec
    shares = experiment.allocation.shares() if experiment.allocation.enrolled() else {
        v: w / sum(w for _, w in spec.variants) for v, w in spec.variants
    }  # fmt: skip
    end = experiment.stopped_ms or at_ms
    days = max(0.0, (end - experiment.started_ms) / 86_400_000) if experiment.started_ms else 0.0
    found = analyse(
        spec,
        {v: s.n for v, s in sums.items()},
        {v: s.metrics for v, s in sums.items()},
        shares,
        days,
        {v: s.covariates for v, s in sums.items()},
    )
    planning = found.planning
    suspended = monitor is not None and monitor.srm_suspended
    return experiments_pb2.ExperimentResults(
        experiment=experiment_message(experiment),
        computed_at_ms=at_ms,
        variants=[
            experiments_pb2.VariantUsers(variant=v, users=found.users[v], expected_share=shares.get(v, 0.0))
            for v in spec.variant_names
        ],
        sample_ratio_p_value=math.nan if suspended else found.srm_p_value,
        sample_ratio_mismatch=found.srm_mismatch and not suspended,
        comparisons=[_comparison_message(r) for r in found.metrics],
        planning=experiments_pb2.ExperimentPlanning(
            users_per_variant=planning.users_per_variant,
            users_per_day=planning.users_per_day,
            days_needed=planning.days_needed,
            days_elapsed=planning.days_elapsed,
            feasible=planning.feasible,
            message=planning.message,
        ),
        sequential=sequential_message(monitor or MonitorState()),
        timeline=[
            experiments_pb2.EffectPoint(
                at_ms=p.at_ms,
                metric=p.metric,
                variant=p.variant,
                users=p.users,
                control_users=p.control_users,
                relative=p.comparison.relative if p.comparison else math.nan,
                relative_ci_low=p.comparison.relative_ci_low if p.comparison else math.nan,
                relative_ci_high=p.comparison.relative_ci_high if p.comparison else math.nan,
            )
            for p in effect_timeline(spec, timeline)
        ],
    )


def sequential_message(state: MonitorState) -> experiments_pb2.SequentialResults:
    return experiments_pb2.SequentialResults(
        looked_at_ms=state.looked_ms,
        planned_users_per_variant=state.planned_users,
        primary=[
            experiments_pb2.PrimaryReading(
                variant=v, looks=len(p.fractions), information_fraction=p.fractions[-1] if p.fractions else 0.0,
                z=p.z[-1] if p.z else 0.0, boundary=p.boundary, verdict=p.verdict, decided_look=p.decided_look,
            )
            for v, p in sorted(state.primary.items())
        ],
        guardrails=[
            experiments_pb2.GuardrailReading(
                metric=key.split("|")[0], variant=key.split("|")[1], p_value=g.test.p_value, alpha=g.alpha,
                ci_low=g.test.low, ci_high=g.test.high, regression=g.regression,
            )
            for key, g in sorted(state.guardrails.items())
        ],
        sample_ratio_p_value=state.srm_p_value,
        sample_ratio_mismatch=state.srm,
        ramp_gate=state.gate,
        sample_ratio_suspended=state.srm_suspended,
    )  # fmt: skip


def _comparison_message(result: MetricResult) -> experiments_pb2.MetricComparison:
    message = experiments_pb2.MetricComparison(
        metric=result.metric, role=result.role, variant=result.variant,
        adjusted_p_value=result.adjusted_p_value, verdict=result.verdict,
        cuped=result.variance_reduction > 0, variance_reduction=result.variance_reduction,
    )  # fmt: skip
    c = result.comparison
    if c is not None:
        message.test = "two_proportion_z" if c.metric == "proportion" else "welch_t"
        message.control_mean, message.variant_mean, message.difference = c.control_mean, c.treatment_mean, c.estimate
        message.ci_low, message.ci_high, message.p_value = c.ci_low, c.ci_high, c.p_value
        message.relative, message.relative_ci_low, message.relative_ci_high = (
            c.relative, c.relative_ci_low, c.relative_ci_high,
        )  # fmt: skip
        message.confidence, message.effect_size = 1 - c.alpha, c.effect_size
    return message


class ExperimentResultsAdmin:
    """`GetExperimentResults`; `AdminService` mixes it in (with `ExperimentsAdmin`'s store access)."""

    _config: ServiceConfig
    _store_call: Callable[[Callable[[ExperimentStore], Any]], Awaitable[Any]]

    async def GetExperimentResults(
        self, request: experiments_pb2.ExperimentRequest, context: grpc.aio.ServicerContext
    ) -> experiments_pb2.ExperimentResults:
        check_experiment_name(request.name)
        if request.name in self._config.experiments:
            raise failed_precondition(
                f"name: {quote(request.name)} is a config-file experiment; it collects no metrics"
            )

        async def read(store: ExperimentStore) -> tuple[Any, ...]:
            found = await store.get(request.name)
            monitors = MonitorStore(store.redis)
            return (
                found,
                await read_stats(store.redis, request.name),
                await monitors.load(request.name),
                await monitors.timeline(request.name),
            )

        experiment, sums, monitor, timeline = await self._store_call(read)
        if experiment is None:
            raise not_found(f"name: no experiment {quote(request.name)}")
        return results_message(experiment, sums, now_ms(), monitor, timeline)
