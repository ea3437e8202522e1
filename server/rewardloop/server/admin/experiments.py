"""Admin, experiments area: create, change, ramp, stop, list and audit experiments.

Thin by design: the request becomes an `ExperimentSpec` (which checks itself, naming the field),
the change is a pure function of `learning/experiments/lifecycle.py`, and `ExperimentStore` applies
it atomically with its history. Config-file experiments are listed (read-only) beside them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import grpc
import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from rewardloop.learning.experiments import lifecycle
from rewardloop.learning.experiments.assigner import segment_surface
from rewardloop.learning.experiments.assignment import ExperimentConfig
from rewardloop.learning.experiments.buckets import BUCKETS
from rewardloop.learning.experiments.lifecycle import Experiment, LifecycleError, layer_free
from rewardloop.learning.experiments.results import plan_at_creation
from rewardloop.learning.experiments.spec import DEFAULT_MIN_USERS, ExperimentSpec, spec_from_dict
from rewardloop.learning.params import ConfigError, check_name
from rewardloop.learning.rewards.signals import Signal
from rewardloop.server.admin.experiment_policies import check_policies, policies_of, variant_message
from rewardloop.server.status import ServiceError, failed_precondition, invalid, not_found, quote, unavailable
from rewardloop.state.experiments import Conflict, ExperimentStore, TooMany, now_ms
from rewardloop.state.segment_priors import segment_surfaces
from rewardloop.state.traffic import daily_users
from rewardloop.v1 import experiments_pb2
from rewardloop.workers.config import ServiceConfig

STATUS = {
    lifecycle.DRAFT: experiments_pb2.EXPERIMENT_STATUS_DRAFT,
    lifecycle.RUNNING: experiments_pb2.EXPERIMENT_STATUS_RUNNING,
    lifecycle.PAUSED: experiments_pb2.EXPERIMENT_STATUS_PAUSED,
    lifecycle.STOPPED: experiments_pb2.EXPERIMENT_STATUS_STOPPED,
}
STATUS_NAME = {number: name for name, number in STATUS.items()}
SOURCES = frozenset(s.key for s in Signal) | {"reward"}
DEFAULT_HISTORY = 100
MAX_HISTORY = 1000
MAX_REASON = 1000


def _aborted(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.ABORTED, message)


def _already_exists(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.ALREADY_EXISTS, message)


def _config_error(exc: ConfigError, prefix: str = "spec") -> ServiceError:
    """``guardrails[1].tolerance must be ...`` → INVALID_ARGUMENT on ``spec.guardrails[1].tolerance``."""
    text = str(exc)
    head = text.split(" ", 1)[0].rstrip(":")
    return invalid(f"{prefix}.{head}", text[len(head) :].lstrip(": ") or text)


def _metric_dict(metric: experiments_pb2.Metric) -> dict[str, Any]:
    out: dict[str, Any] = {"source": metric.source, "higher_is_better": not metric.lower_is_better}
    for key in ("aggregate", "surface", "name"):
        if getattr(metric, key):
            out[key] = getattr(metric, key)
    if metric.tolerance:
        out["tolerance"] = metric.tolerance
    return out


def spec_of(message: experiments_pb2.ExperimentSpec, config: ServiceConfig) -> ExperimentSpec:
    """The request's spec, zero values meaning defaults, checked against the service's surfaces and signals."""
    raw: dict[str, Any] = {
        "variants": {v.name: v.weight for v in message.variants},
        "description": message.description,
        "layer": message.layer,
        "targeting": [{"attribute": c.attribute, "operator": c.operator, "values": list(c.values)}
                      for c in message.targeting],
        "surfaces": list(message.surfaces),
        "guardrails": [_metric_dict(g) for g in message.guardrails],
        "mde_relative": not message.mde_absolute,
        "ramp": [
            {"coverage": s.coverage, "hold_hours": s.hold_hours or 24.0, "min_users": s.min_users or DEFAULT_MIN_USERS}
            for s in message.ramp
        ],
        "auto_stop": not message.no_auto_stop,
        "salt": message.salt,
        "metadata": dict(message.metadata),
    }  # fmt: skip
    if message.HasField("primary_metric"):
        raw["primary_metric"] = _metric_dict(message.primary_metric)
    for key in ("coverage", "mde", "alpha", "power", "planned_days", "expected_daily_users"):
        if getattr(message, key):
            raw[key] = getattr(message, key)
    for key in ("baseline_mean", "baseline_sd"):
        if message.HasField(key):
            raw[key] = getattr(message, key)
    raw["refuse_infeasible"] = message.refuse_infeasible
    raw["holdout"] = message.holdout
    raw["cuped_days"] = 0.0 if message.no_cuped else (message.cuped_days or 14.0)
    if policies := policies_of(message, config):
        raw["policies"] = policies
    if len(raw["variants"]) != len(message.variants):
        raise invalid("spec.variants", "each variant must be named once")
    try:
        spec = spec_from_dict(message.name, raw)
    except ConfigError as exc:
        raise _config_error(exc) from None
    _check_known(spec, config)
    return spec


def _check_known(spec: ExperimentSpec, config: ServiceConfig) -> None:
    for i, surface in enumerate(spec.surfaces):
        if surface not in config.surfaces:
            raise invalid(f"spec.surfaces[{i}]", f"unknown surface {quote(surface)}")
    learning = segment_surfaces(config.surfaces)
    for i, condition in enumerate(spec.targeting):
        segmented = segment_surface(condition.attribute)
        if segmented is not None and segmented not in learning:
            raise invalid(
                f"spec.targeting[{i}].attribute",
                f"{quote(segmented)} is not a surface that learns behaviour segments"
                f" ({', '.join(sorted(learning)) or 'none does'})",
            )
    for where, metric in (("primary_metric", spec.primary_metric),
                          *((f"guardrails[{i}]", g) for i, g in enumerate(spec.guardrails))):  # fmt: skip
        if metric.source not in SOURCES:
            raise invalid(f"spec.{where}.source", f"unknown signal {quote(metric.source)}; known: reward, click, ...")
        if metric.surface and metric.surface not in config.surfaces:
            raise invalid(f"spec.{where}.surface", f"unknown surface {quote(metric.surface)}")
    check_policies(spec, config)


def experiment_message(experiment: Experiment) -> experiments_pb2.Experiment:
    spec = experiment.spec
    counts = experiment.allocation.counts()
    retired = sum(e - s for s, e in experiment.allocation.retired)
    return experiments_pb2.Experiment(
        spec=spec_message(spec),
        status=STATUS[experiment.status],
        version=experiment.version,
        coverage=experiment.coverage if experiment.holds_buckets else 0.0,
        ramp_step=experiment.ramp_step,
        allocation=[
            experiments_pb2.VariantAllocation(
                variant=v, weight=w, coverage=counts.get(v, 0) / BUCKETS if experiment.holds_buckets else 0.0
            )
            for v, w in spec.variants
        ],
        retired_coverage=retired / BUCKETS if experiment.holds_buckets else 0.0,
        created_at_ms=experiment.created_ms,
        updated_at_ms=experiment.updated_ms,
        started_at_ms=experiment.started_ms,
        stopped_at_ms=experiment.stopped_ms,
        reason=experiment.reason,
        winner=experiment.winner,
        source="api",
        stepped_at_ms=experiment.stepped_ms,
        changed_by=experiment.changed_by,
        planning=experiments_pb2.ExperimentPlanning(**experiment.planning) if experiment.planning else None,
    )


def _metric_message(metric: Any) -> experiments_pb2.Metric:
    return experiments_pb2.Metric(
        source=metric.source, aggregate=metric.aggregate, surface=metric.surface,
        lower_is_better=not metric.higher_is_better, tolerance=metric.tolerance, name=metric.name,
    )  # fmt: skip


def spec_message(spec: ExperimentSpec) -> experiments_pb2.ExperimentSpec:
    return experiments_pb2.ExperimentSpec(
        name=spec.name, description=spec.description,
        variants=[variant_message(spec, v, w) for v, w in spec.variants],
        layer=spec.layer, coverage=spec.coverage,
        targeting=[experiments_pb2.TargetingCondition(attribute=c.attribute, operator=c.operator, values=c.values)
                   for c in spec.targeting],
        surfaces=spec.surfaces, primary_metric=_metric_message(spec.primary_metric),
        guardrails=[_metric_message(g) for g in spec.guardrails],
        mde=spec.mde, mde_absolute=not spec.mde_relative, alpha=spec.alpha, power=spec.power,
        planned_days=spec.planned_days,
        ramp=[experiments_pb2.RampStep(coverage=s.coverage, hold_hours=s.hold_hours, min_users=s.min_users)
              for s in spec.ramp],
        salt=spec.salt, metadata=spec.metadata, no_auto_stop=not spec.auto_stop,
        baseline_mean=spec.baseline_mean, baseline_sd=spec.baseline_sd,
        expected_daily_users=spec.expected_daily_users, refuse_infeasible=spec.refuse_infeasible,
        holdout=spec.holdout, cuped_days=spec.cuped_days, no_cuped=spec.cuped_days == 0,
    )  # fmt: skip


def config_experiment_message(experiment: ExperimentConfig) -> experiments_pb2.Experiment:
    """A config-file experiment as the API shows it: running, read-only, its own hashing."""
    total = sum(w for _, w in experiment.variants)
    return experiments_pb2.Experiment(
        spec=experiments_pb2.ExperimentSpec(
            name=experiment.name, coverage=experiment.traffic, salt=experiment.salt,
            variants=[experiments_pb2.Variant(name=v, weight=w) for v, w in experiment.variants],
            surfaces=experiment.surfaces,
        ),
        status=experiments_pb2.EXPERIMENT_STATUS_RUNNING, version=1, coverage=experiment.traffic, ramp_step=-1,
        allocation=[experiments_pb2.VariantAllocation(variant=v, weight=w, coverage=experiment.traffic * w / total)
                    for v, w in experiment.variants],
        source="config",
    )  # fmt: skip


def check_experiment_name(name: str) -> None:
    if not name:
        raise invalid("name", "is required")
    try:
        check_name("name", name)
    except ConfigError as exc:
        raise invalid("name", str(exc).removeprefix("name: ")) from None


def _reason(text: str) -> str:
    if len(text) > MAX_REASON:
        raise invalid("reason", f"must be at most {MAX_REASON} characters, got {len(text)}")
    return text


Change = Callable[[dict[str, Experiment], Experiment], Experiment | None]


class ExperimentsAdmin:
    """The Admin RPCs of the experiments area; `AdminService` mixes it in."""

    _config: ServiceConfig
    _redis_url: str

    async def _apply(self, name: str, action: str, change: Change, expected_version: int = 0) -> Experiment | None:
        def on(experiments: dict[str, Experiment]) -> Experiment | None:
            current = experiments.get(name)
            if current is None:
                raise not_found(f"name: no experiment {quote(name)}")
            return change(experiments, current)

        return await self._store_call(lambda store: store.apply(name, action, on, expected_version))

    async def _store_call(self, call: Callable[[ExperimentStore], Any]) -> Any:
        try:
            async with aioredis.Redis.from_url(self._redis_url) as redis:
                return await call(ExperimentStore(redis))
        except LifecycleError as exc:
            raise failed_precondition(str(exc)) from None
        except Conflict as exc:
            raise _aborted(str(exc)) from None
        except TooMany as exc:
            raise ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
        except (RedisError, OSError) as exc:
            raise unavailable(f"experiment storage is unavailable: {exc}") from None

    async def CreateExperiment(
        self, request: experiments_pb2.CreateExperimentRequest, context: grpc.aio.ServicerContext
    ) -> experiments_pb2.Experiment:
        spec = spec_of(request.spec, self._config)
        if spec.name in self._config.experiments:
            raise _already_exists(f"spec.name: {quote(spec.name)} is an experiment of the config file")

        planning = await self._plan(spec)

        def create(experiments: dict[str, Experiment]) -> Experiment:
            if spec.name in experiments:
                raise _already_exists(f"spec.name: experiment {quote(spec.name)} exists")
            return replace(lifecycle.create(spec, now_ms()), planning=planning)

        created = await self._store_call(lambda store: store.apply(spec.name, "create", create))
        return experiment_message(created)

    async def UpdateExperiment(
        self, request: experiments_pb2.UpdateExperimentRequest, context: grpc.aio.ServicerContext
    ) -> experiments_pb2.Experiment:
        spec = spec_of(request.spec, self._config)
        planning = await self._plan(spec)

        def update(experiments: dict[str, Experiment], current: Experiment) -> Experiment:
            free = layer_free(experiments, spec.layer_key, excluding=spec.name)
            return replace(lifecycle.update(current, spec, free, now_ms()), planning=planning)

        return self._answer(await self._apply(spec.name, "update", update, request.expected_version))

    async def StartExperiment(
        self, request: experiments_pb2.ExperimentRequest, context: grpc.aio.ServicerContext
    ) -> experiments_pb2.Experiment:
        check_experiment_name(request.name)
        found = await self._store_call(lambda store: store.get(request.name))
        planning = await self._plan(found.spec) if found is not None else {}

        def start(experiments: dict[str, Experiment], current: Experiment) -> Experiment:
            free = layer_free(experiments, current.spec.layer_key, excluding=current.name)
            started = lifecycle.start(current, free, now_ms())
            return replace(started, planning=planning) if current.spec == found.spec else started

        return self._answer(await self._apply(request.name, "start", start, request.expected_version))

    async def PauseExperiment(
        self, request: experiments_pb2.ExperimentRequest, context: grpc.aio.ServicerContext
    ) -> experiments_pb2.Experiment:
        check_experiment_name(request.name)
        reason = _reason(request.reason)
        changed = await self._apply(
            request.name,
            "pause",
            lambda _, current: lifecycle.pause(current, now_ms(), reason),
            request.expected_version,
        )
        return self._answer(changed)

    async def StopExperiment(
        self, request: experiments_pb2.StopExperimentRequest, context: grpc.aio.ServicerContext
    ) -> experiments_pb2.Experiment:
        check_experiment_name(request.name)
        reason = _reason(request.reason)

        def stop(_: dict[str, Experiment], current: Experiment) -> Experiment:
            if request.winner and request.winner not in current.spec.variant_names:
                raise invalid("winner", f"{quote(request.winner)} is not a variant of {quote(current.name)}")
            return lifecycle.stop(current, now_ms(), reason, request.winner)

        return self._answer(await self._apply(request.name, "stop", stop, request.expected_version))

    async def RampExperiment(
        self, request: experiments_pb2.RampExperimentRequest, context: grpc.aio.ServicerContext
    ) -> experiments_pb2.Experiment:
        check_experiment_name(request.name)
        coverage = request.coverage or None
        if coverage is not None and not (np.isfinite(coverage) and 0 < coverage <= 1):
            raise invalid("coverage", f"must be in (0, 1], got {coverage}")

        def ramp(experiments: dict[str, Experiment], current: Experiment) -> Experiment:
            free = layer_free(experiments, current.spec.layer_key, excluding=current.name)
            return lifecycle.ramp(current, free, now_ms(), coverage)

        return self._answer(await self._apply(request.name, "ramp", ramp, request.expected_version))

    async def GetExperiment(
        self, request: experiments_pb2.ExperimentRequest, context: grpc.aio.ServicerContext
    ) -> experiments_pb2.Experiment:
        check_experiment_name(request.name)
        if request.name in self._config.experiments:
            return config_experiment_message(self._config.experiments[request.name])
        found = await self._store_call(lambda store: store.get(request.name))
        if found is None:
            raise not_found(f"name: no experiment {quote(request.name)}")
        return experiment_message(found)

    async def ListExperiments(
        self, request: experiments_pb2.ListExperimentsRequest, context: grpc.aio.ServicerContext
    ) -> experiments_pb2.ListExperimentsResponse:
        if request.status and request.status not in STATUS_NAME:
            raise invalid("status", f"unknown status {request.status}")
        if request.layer:
            check_experiment_name(request.layer)
        stored: dict[str, Experiment] = await self._store_call(lambda store: store.load())
        listed = [
            experiment_message(e)
            for e in stored.values()
            if (not request.status or e.status == STATUS_NAME[request.status])
            and (not request.layer or e.spec.layer == request.layer)
        ]
        if request.status in (0, experiments_pb2.EXPERIMENT_STATUS_RUNNING) and not request.layer:
            listed += [config_experiment_message(c) for c in self._config.experiments.values()]
        listed.sort(key=lambda m: m.spec.name)
        return experiments_pb2.ListExperimentsResponse(experiments=listed)

    async def GetExperimentHistory(
        self, request: experiments_pb2.ExperimentHistoryRequest, context: grpc.aio.ServicerContext
    ) -> experiments_pb2.ExperimentHistoryResponse:
        check_experiment_name(request.name)
        limit = request.limit or DEFAULT_HISTORY
        if limit > MAX_HISTORY:
            raise invalid("limit", f"must be at most {MAX_HISTORY}, got {limit}")
        changes = await self._store_call(lambda store: store.history(request.name, limit))
        if not changes and await self._store_call(lambda store: store.get(request.name)) is None:
            raise not_found(f"name: no experiment {quote(request.name)}")
        return experiments_pb2.ExperimentHistoryResponse(
            changes=[
                experiments_pb2.ExperimentChange(
                    version=e.version, action=action, at_ms=at_ms, experiment=experiment_message(e)
                )
                for action, at_ms, e in changes
            ]
        )

    async def DeleteExperiment(
        self, request: experiments_pb2.ExperimentRequest, context: grpc.aio.ServicerContext
    ) -> experiments_pb2.DeleteExperimentResponse:
        check_experiment_name(request.name)

        def delete(_: dict[str, Experiment], current: Experiment) -> None:
            if current.holds_buckets:
                raise LifecycleError(f"experiment {current.name!r} is {current.status}; stop it first")
            return None

        await self._apply(request.name, "delete", delete, request.expected_version)
        return experiments_pb2.DeleteExperimentResponse()

    async def _plan(self, spec: ExperimentSpec) -> dict[str, Any]:
        """The planning answer at the traffic of the spec's surfaces (all when it names none);
        FAILED_PRECONDITION when the spec refuses an infeasible plan."""
        surfaces = spec.surfaces or tuple(self._config.surfaces)
        daily = await self._store_call(lambda store: daily_users(store.redis, surfaces))
        planning = plan_at_creation(spec, daily)
        if spec.refuse_infeasible and not planning.feasible:
            raise failed_precondition(
                f"spec.planned_days: {planning.message}; raise the MDE, the coverage or the planned days"
            )
        return asdict(planning)

    @staticmethod
    def _answer(experiment: Experiment | None) -> experiments_pb2.Experiment:
        assert experiment is not None
        return experiment_message(experiment)
