"""Admin, evaluation area: off-policy evaluation of candidate policies from the logs.

The evaluation reads every user's logs and fits models: it runs as a Ray task, off the
front's event loop, so serving traffic is not held up by it. The task's body is
`rewardloop.workers.evaluation.evaluate_from_logs`, the same function the command line runs.
"""

from __future__ import annotations

import math
from typing import Any

import grpc
import ray

from rewardloop.learning.bandits import ALGORITHMS, ConfigError, PolicyConfig, config_from_dict, make_policy
from rewardloop.learning.evaluation.candidate import CandidateEvaluation, candidate_params
from rewardloop.learning.surface import SurfaceConfig
from rewardloop.server import validation
from rewardloop.server.status import invalid, quote, to_service_error
from rewardloop.v1 import admin_pb2
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.evaluation import evaluate_from_logs

DEFAULT_MAX_DECISIONS = 100_000


_evaluate = ray.remote(num_cpus=0, max_retries=0)(evaluate_from_logs)


class EvaluationAdmin:
    """The Admin RPCs of the evaluation area; `AdminService` mixes it in."""

    _config: ServiceConfig
    _redis_url: str

    async def EvaluatePolicy(
        self, request: admin_pb2.EvaluatePolicyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.EvaluatePolicyResponse:
        surface = validation.surface_named(self._config, request.surface)
        if surface.kind == "agent":
            # Its decisions are turns of sessions: a one-step estimator of a bandit on them says nothing.
            name = quote(surface.name)
            raise invalid("surface", f"{name} is an agent surface; off-policy evaluation covers bandit surfaces")
        candidate = _candidate(surface, request.algorithm, dict(request.params))
        confidence = _open_unit("confidence", request.confidence or 0.95)
        train_fraction = _open_unit("train_fraction", request.train_fraction or 0.5)
        max_decisions = request.max_decisions or DEFAULT_MAX_DECISIONS
        if not 1 <= max_decisions <= 1_000_000:
            raise invalid("max_decisions", f"must be in [1, 1000000], got {max_decisions}")
        try:
            result: CandidateEvaluation = await _evaluate.remote(
                self._redis_url, surface, candidate, max_decisions, train_fraction, confidence
            )
        except Exception as exc:
            raise (to_service_error(exc) or exc) from exc
        return admin_pb2.EvaluatePolicyResponse(
            estimates=[
                admin_pb2.PolicyValueEstimate(
                    estimator=e.name,
                    value=e.value,
                    ci_low=e.ci_low,
                    ci_high=e.ci_high,
                    std_error=e.std_error,
                    effective_sample_size=e.effective_sample_size,
                    max_weight=e.max_weight,
                )
                for e in result.estimates.values()
            ],
            logged_value=result.logged_value,
            train_decisions=result.train_decisions,
            eval_decisions=result.eval_decisions,
            algorithm=result.algorithm,
        )


def _candidate(surface: SurfaceConfig, algorithm: str, params: dict[str, float]) -> PolicyConfig:
    """The candidate's config, checked against what the surface can host (its contexts, its
    item features) before any work is sent off: incompatibilities are the caller's mistake."""
    name = algorithm or surface.policy_config.name
    if name not in ALGORITHMS:
        raise invalid("algorithm", f"unknown algorithm {quote(name)}; known: {', '.join(ALGORITHMS)}")
    for key, value in params.items():
        if not math.isfinite(value):
            raise invalid(f"params[{quote(key)}]", f"must be finite, got {value}")
    base: dict[str, Any] = {} if algorithm else surface.policy_config.to_dict()
    try:
        candidate = config_from_dict(name, {**base, **candidate_params(params)})
    except ConfigError as exc:
        raise invalid("params", _bounded(str(exc))) from None
    try:
        make_policy(
            candidate, len(surface.items), context_dim=surface.context_dim, arm_features=surface.item_feature_matrix()
        )
    except (ConfigError, ValueError) as exc:
        raise invalid("algorithm", f"{name} cannot serve surface {surface.name!r}: {_bounded(str(exc))}") from None
    return candidate


def _bounded(message: str) -> str:
    """A library's message may quote a parameter name the caller sent: keep it short."""
    return message if len(message) <= 300 else message[:300] + "..."


def _open_unit(field: str, value: float) -> float:
    if not 0 < value < 1:
        raise invalid(field, f"must be in (0, 1), got {value}")
    return value
