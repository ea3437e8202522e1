"""Surface kinds: what decides on a surface. The shard's one decision seam.

``ShardCore._decide`` looks a surface's decider up in ``KINDS`` by ``SurfaceConfig.kind``; a new
kind is a class with ``decide`` plus one ``KINDS`` entry plus its name in ``SURFACE_KINDS``
(learning/surface.py). Agent surfaces (``agents.AgentSurface``) hold sessions and a policy source,
so the shard builds them itself. Deciding may wait (an agent asks the policy replicas).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from rewardloop.learning.bandits import Policy
from rewardloop.learning.surface import SurfaceConfig
from rewardloop.state.keys import new_decision_id
from rewardloop.state.priors import Priors
from rewardloop.state.records import DecisionRecord
from rewardloop.state.user_state import UserState
from rewardloop.workers.messages import ChosenItem, Decision, RecommendCall, Rejected


class SurfaceKind(Protocol):
    async def decide(
        self, call: RecommendCall, user: UserState, now_ms: int
    ) -> tuple[Decision, DecisionRecord] | Rejected:
        """The answer to the call and the record the decision log keeps of it, or why there is none."""
        ...


class Bandit:
    """A bandit surface: the user's (decayed) policy state, shrunk toward the population/segment
    prior, draws a slate. A policy-experiment variant's policy on the surface is a ``Bandit`` of its
    own (``variant_policies.py``): ``surface`` then carries the variant's key as its name, and its
    states learn per user, without the population prior (which is the surface's policy's statistics)."""

    def __init__(self, surface: SurfaceConfig, policy: Policy, priors: Priors):
        self._surface = surface
        self._policy = policy
        self._priors = priors
        self._all_arms = np.arange(len(surface.items))

    async def decide(self, call: RecommendCall, user: UserState, now_ms: int) -> tuple[Decision, DecisionRecord]:
        return self.decide_now(call, user, now_ms)

    def decide_now(self, call: RecommendCall, user: UserState, now_ms: int) -> tuple[Decision, DecisionRecord]:
        """The decision, synchronously: a bandit never waits (in-process benchmarks call this)."""
        surface, policy = self._surface, self._policy
        policy_state = user.decision_state(policy, surface, now_ms)
        if call.candidates:
            available = np.fromiter((surface.index[c] for c in call.candidates), dtype=np.int64)
        else:
            available = self._all_arms
        features = call.features
        if surface.features.realtime:
            assert surface.realtime is not None
            live = surface.features.realtime_vector(surface.realtime, user.activity, now_ms)
            features = (*features, *live.tolist())
        context = np.array(features) if policy.contextual else None
        prior = self._priors.prior(surface.name, call.segment, policy_state, user.memberships)
        effective = policy.combine(policy_state, *prior) if prior is not None else policy_state
        # Nothing of the user's own to learn from yet: serve what the prior knows (ColdStart).
        exploit = prior is not None and surface.cold_start.exploits_first(policy.name, policy_state.n_updates)
        choices = policy.select(effective, available, call.n, user.rng, context=context, exploit=exploit)
        decision = Decision(
            decision_id=new_decision_id(now_ms),
            items=tuple(ChosenItem(surface.items[c.arm], float(c.score), float(c.propensity), c.slot) for c in choices),
            policy=surface.policy_config.name,
            model_version=f"{surface.fingerprint}.{policy_state.n_updates}",
        )
        record = DecisionRecord(
            pseudonym=call.pseudonym,
            decision_id=decision.decision_id,
            surface=call.surface,
            items=tuple(i.item_id for i in decision.items),
            propensities=tuple(i.propensity for i in decision.items),
            policy=decision.policy,
            model_version=decision.model_version,
            decided_at_ms=now_ms,
            closes_at_ms=now_ms + surface.reward.window_ms,
            features=features,
            segment=call.segment,
            policy_key=surface.name if surface.name != call.surface else "",
        )
        return decision, record


KINDS: dict[str, Callable[[SurfaceConfig, Policy, Priors], SurfaceKind]] = {"bandit": Bandit}
