"""Admin, experiments area: a variant's policies (policy experiments), proto <-> spec and the checks
against the service's surfaces.

A policy takes what EvaluatePolicy takes (``evaluation.py``): an algorithm (empty: the surface's
own, its parameters overridden by ``params``) and a map of parameters; the spec checks both
(``learning/experiments/policies.py``), and here the surface must be able to host the policy
(contexts, item features, real-time features, time decay), every error naming the field
(``spec.variants[1].policies.home.algorithm``). On an agent surface a variant's policy is a bandit
over the surface's actions and request features (bandit vs agent); the agent decides for the others.
"""

from __future__ import annotations

from typing import Any

from rewardloop.learning.bandits import make_policy
from rewardloop.learning.experiments.policies import policy_key
from rewardloop.learning.experiments.spec import ExperimentSpec
from rewardloop.learning.params import NAME_PATTERN, ConfigError
from rewardloop.server.status import invalid, quote
from rewardloop.v1 import experiments_pb2
from rewardloop.workers.config import ServiceConfig


def policies_of(message: experiments_pb2.ExperimentSpec, config: ServiceConfig) -> dict[str, dict[str, Any]]:
    """The variants' policies as ``spec_from_dict`` reads them, an empty algorithm resolved to the
    surface's own (its configured parameters, overridden by the request's)."""
    out: dict[str, dict[str, Any]] = {}
    for i, variant in enumerate(message.variants):
        for name, policy in variant.policies.items():
            if not NAME_PATTERN.match(name):
                named = f"surface name {quote(name)} must be 1..64 characters of [A-Za-z0-9_.-]"
                raise invalid(f"spec.variants[{i}].policies", named)
            where = f"spec.variants[{i}].policies.{name}"
            surface = config.surfaces.get(name)
            algorithm, params = policy.algorithm, dict(policy.params)
            if surface is not None and surface.kind == "agent" and not algorithm:
                raise invalid(
                    f"{where}.algorithm",
                    f"{quote(name)} is an agent surface: a variant's policy names a bandit algorithm"
                    f" (the agent itself decides for the variants without one)",
                )
            if not algorithm:
                if surface is None:
                    raise invalid(where, f"unknown surface {quote(name)}")
                algorithm = surface.policy_config.name
                params = {**surface.policy_config.to_dict(), **params}
            out.setdefault(variant.name, {})[name] = {"algorithm": algorithm, "params": params}
    return out


def check_policies(spec: ExperimentSpec, config: ServiceConfig) -> None:
    """Each policy can decide its surface (the surfaces are known and listed: checked before)."""
    for i, variant in enumerate(spec.variant_names):
        for name, policy in spec.policies.get(variant, {}).items():
            where = f"spec.variants[{i}].policies.{name}"
            surface = config.surfaces.get(name)
            if surface is None:
                raise invalid(where, f"unknown surface {quote(name)}")
            try:
                surface.deciding_with(policy_key(name, spec.name, variant, 0), policy.config)
                make_policy(
                    policy.config, len(surface.items), context_dim=surface.context_dim,
                    arm_features=surface.item_feature_matrix(),
                )  # fmt: skip
            except (ConfigError, ValueError) as exc:
                text = str(exc)
                text = text if len(text) <= 300 else text[:300] + "..."
                message = f"{policy.algorithm} cannot serve surface {quote(name)}: {text}"
                raise invalid(f"{where}.algorithm", message) from None


def variant_message(spec: ExperimentSpec, variant: str, weight: float) -> experiments_pb2.Variant:
    return experiments_pb2.Variant(
        name=variant,
        weight=weight,
        policies={
            name: experiments_pb2.SurfacePolicy(
                algorithm=p.algorithm, params={k: float(v) for k, v in p.params.items()}
            )
            for name, p in spec.policies.get(variant, {}).items()
        },
    )
