"""Policy experiments on the shard: which policy decides a surface for a user in a variant.

The front assigns (its ``Assigner``, from the request's targeting attributes, as Assign and
Recommend report it) and passes the user's assignments with the call
(``RecommendCall.assignments``). When one of them is a variant with a policy for the call's surface
(``ExperimentSpec.policies``), that policy decides, from the user's state for it, kept under the
variant's key (``learning/experiments/policies.policy_key``); the decision records the key, so the
feedback joined to it trains that state (``FeedbackRecord.state_key``). Should experiments of two
layers both override a surface for one user, the first by name decides.

The variants served are those of the shard's experiment catalogue that hold buckets (running, or
paused: their users come back to them). Each is a derived surface (``SurfaceConfig.deciding_with``)
and policy in the shard's ``surfaces`` and ``policies`` maps, which the user cache, snapshots,
replay and ingest read: a variant that leaves them (its experiment stopped or deleted) has its
users' states dropped at their next touch or snapshot (``UserState.forget_unserved``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from rewardloop.learning.bandits import Policy, make_policy
from rewardloop.learning.experiments.policies import policy_key
from rewardloop.learning.params import ConfigError
from rewardloop.learning.surface import SurfaceConfig
from rewardloop.state.experiments import ExperimentCatalog
from rewardloop.state.priors import Priors
from rewardloop.workers.kinds import Bandit
from rewardloop.workers.messages import RecommendCall

log = logging.getLogger(__name__)


class VariantPolicies:
    """The policy-experiment variants a shard serves, kept in step with its experiment catalogue.

    ``surfaces`` and ``policies`` are the shard's maps (the configured surfaces' entries first); the
    variants' entries are added and removed in place, by ``sync``, without an await in between.
    """

    def __init__(
        self,
        configured: Mapping[str, SurfaceConfig],
        surfaces: dict[str, SurfaceConfig],
        policies: dict[str, Policy],
        priors: Priors,
        catalog: ExperimentCatalog,
    ):
        self._configured = configured
        self._surfaces = surfaces
        self._policies = policies
        self._priors = priors
        self._catalog = catalog
        self._version: int | None = None
        # (experiment, variant, surface) -> the variant's key; key -> what decides.
        self._routes: dict[tuple[str, str, str], str] = {}
        self._kinds: dict[str, Bandit] = {}

    def __len__(self) -> int:
        return len(self._kinds)

    def sync(self) -> None:
        """Follow the catalogue, if it changed since the last call."""
        if self._catalog.version == self._version:
            return
        self._version = self._catalog.version
        routes: dict[tuple[str, str, str], str] = {}
        for experiment in self._catalog.experiments.values():
            if not experiment.holds_buckets:
                continue
            spec = experiment.spec
            for variant, by_surface in spec.policies.items():
                for name, chosen in by_surface.items():
                    surface = self._configured.get(name)
                    if surface is None:
                        continue  # checked at creation; the service's config changed since
                    key = policy_key(name, spec.name, variant, experiment.created_ms)
                    if key not in self._kinds:
                        try:
                            derived = surface.deciding_with(key, chosen.config)
                            policy = make_policy(
                                chosen.config, len(surface.items), context_dim=surface.context_dim,
                                arm_features=surface.item_feature_matrix(),
                            )  # fmt: skip
                        except (ConfigError, ValueError) as exc:
                            log.warning("experiment %s: variant %s cannot decide %s: %s", spec.name, variant, name, exc)
                            continue
                        self._surfaces[key], self._policies[key] = derived, policy
                        self._kinds[key] = Bandit(derived, policy, self._priors)
                    routes[(spec.name, variant, name)] = key
        for key in set(self._kinds) - set(routes.values()):
            del self._kinds[key], self._surfaces[key], self._policies[key]
        self._routes = routes

    def unknown(self, call: RecommendCall) -> bool:
        """Whether the call names an experiment the catalogue does not hold (started a moment ago)."""
        return any(experiment not in self._catalog.experiments for experiment, _ in call.assignments)

    def deciding(self, call: RecommendCall) -> Bandit | None:
        """What decides the call's surface for the user, when a variant of theirs overrides it."""
        for experiment, variant in sorted(call.assignments):
            key = self._routes.get((experiment, variant, call.surface))
            if key is not None:
                return self._kinds[key]
        return None
