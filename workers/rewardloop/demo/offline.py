"""Per-user bandits with a population prior, run in-process over a simulated population.

The decision path of a shard without the service around it: every user has their own policy state,
the population prior is every reward of every user counted into one more state of the same policy
(``Priors.learn``), refreshed between rounds (the service refreshes every second), and a decision
selects with ``policy.combine(user, prior, strength)``. Used to compare algorithms and defaults over
population families and seeds quickly; the service-level scenarios (``rewardloop.demo``) check the
same things through gRPC.

Users come in two cohorts: *veterans* (the first ``1 - newcomer_share`` of the population) make
every request, round by round; then *newcomers* arrive at a population prior the veterans taught and
make theirs. Clicks are the reward.

With ``segments``, every ``REFIT_ROUNDS`` rounds the veterans' evidence is fitted into behaviour-based
segments and the finer mixture beside them (``learning.segments.fit_segments_and_mixture``), and
each decision uses the user's own prior instead: the mixture's components weighted by the user's
membership given their evidence, at their estimated strength (as the shard serves).

>>> from rewardloop.learning.bandits import Thompson
>>> from rewardloop.simulator.families import FAMILIES
>>> run = run_family(FAMILIES["latent_groups"], Thompson(), strength=2.0, seed=0)
>>> run.requests, run.veteran_ctr.shape, run.newcomer_ctr.shape
(60, (60,), (60,))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from rewardloop.learning.bandits import Policy, PolicyConfig, PolicyState, make_policy
from rewardloop.learning.segments import SegmentModel, fit_segments_and_mixture
from rewardloop.learning.surface import ColdStart
from rewardloop.simulator.families import Family, best_item_ctr, group_bound
from rewardloop.simulator.population import Population

FloatArray = NDArray[np.float64]
REFIT_ROUNDS = 5


@dataclass(frozen=True)
class Run:
    """Expected click rate (the chosen item's true click probability) per request index, per cohort."""

    requests: int
    veteran_ctr: FloatArray
    newcomer_ctr: FloatArray
    random: float
    """A uniformly random item's click rate over the veterans' requests."""
    best_item: float
    """The population's single best item's click rate over the veterans' requests."""
    oracle: float
    """Each veteran's own best item's, over their requests."""
    bound: FloatArray
    """``group_bound`` at each request index over the newcomers: what knowing the true groups would get them."""
    newcomer_best: float
    """The population's single best item's click rate for the newcomers (after a taste shift, if there was one)."""

    @property
    def lift(self) -> float:
        """Veterans' click rate over all their requests, relative to a uniformly random item."""
        return float(self.veteran_ctr.mean() / self.random)

    @property
    def over_best_item(self) -> float:
        return float(self.veteran_ctr.mean() / self.best_item)

    def newcomers(self, first: int, last: int) -> float:
        """Newcomers' mean click rate at requests ``first``..``last`` (1-based, inclusive)."""
        return float(self.newcomer_ctr[first - 1 : last].mean())

    def bound_at(self, first: int, last: int) -> float:
        return float(self.bound[first - 1 : last].mean())


def run_family(
    family: Family,
    config: PolicyConfig,
    strength: float,
    seed: int,
    *,
    newcomer_share: float = 0.25,
    requests: int | None = None,
    segments: bool = False,
    explore_first: bool | None = None,
    prior_mixture: bool = True,
) -> Run:
    """``family``'s population of ``seed`` served by per-user ``config`` policies over a population prior.

    A drifting family's veterans face the shifted tastes from ``family.shift_at`` on, and newcomers
    arrive after the shift.
    """
    population, drift = family.population(seed), family.drift(seed)
    requests = requests or family.requests
    return run_population(
        population, config, strength, requests, seed, newcomer_share, segments, drift, explore_first, prior_mixture
    )


def run_population(
    population: Population,
    config: PolicyConfig,
    strength: float,
    requests: int,
    seed: int,
    newcomer_share: float = 0.25,
    segments: bool = False,
    drift: tuple[int, Population] | None = None,
    explore_first: bool | None = None,
    prior_mixture: bool = True,
) -> Run:
    """``drift = (t, later)``: from request ``t`` on (and for every newcomer) users behave as in ``later``.
    ``prior_mixture=False`` serves priors from the selected segments instead of the finer mixture.

    As in the shard, a user without evidence is served the prior's best item unless the algorithm
    explores first (``ColdStart.exploits_first``; ``explore_first`` overrides its default)."""
    policy = make_policy(config, n_arms=population.n_items)
    before = population.click_matrix()
    shift_at, later = drift if drift is not None else (requests, population)
    after = later.click_matrix()
    n_new = max(1, round(population.n_users * newcomer_share))
    veterans, newcomers = np.split(np.arange(population.n_users), [population.n_users - n_new])
    states = {int(u): policy.new_state() for u in range(population.n_users)}
    prior_live = policy.new_state()
    rng = np.random.default_rng([seed, 7])
    available = np.arange(population.n_items)

    model: SegmentModel | None = None  # the prior mixture (or the segments: ``prior_mixture``)
    cold_start = ColdStart(explore_first=explore_first)

    def serve(cohort: NDArray[np.intp], refit: bool) -> FloatArray:
        nonlocal model
        ctr = np.zeros(requests)
        for t in range(requests):
            clicks = before if refit and t < shift_at else after  # newcomers come after any shift
            prior = prior_live.copy()  # what the shard decides with until the next refresh
            if segments and refit and t % REFIT_ROUNDS == 0:
                # One thread, as in the service's fitter: two runs at once, each with OpenMP's
                # spinning pool, took 10-20x longer each.
                with threadpool_limits(limits=1):
                    fitted = fit_segments_and_mixture(*_evidence(states), seed=seed)
                if fitted is not None:  # served as the shard serves: from the prior mixture
                    selected, mixture = fitted
                    model = mixture if mixture is not None and prior_mixture else selected
            for u in cohort:
                state = states[int(u)]
                if model is not None:
                    effective = _segment_prior(policy, model, state)
                else:
                    effective = policy.combine(state, prior, strength) if prior.n_updates and strength > 0 else state
                exploit = effective is not state and cold_start.exploits_first(config.name, state.n_updates)
                arm = policy.select(effective, available, 1, rng, exploit=exploit)[0].arm
                p = clicks[u, arm]
                reward = float(rng.random() < p)
                policy.update(state, arm, reward)
                policy.update(prior_live, arm, reward)
                ctr[t] += p
            ctr[t] /= len(cohort)
        return ctr

    veteran_ctr = serve(veterans, refit=True)
    newcomer_ctr = serve(newcomers, refit=False)
    # Each cohort's baselines are its own users' (the population's best item served to them, the
    # bound averaged over them): a quarter of the users' mean of an item is ~10% off the whole
    # population's, as much as the gaps measured. The veterans': before and after any shift, by its share.
    share = min(shift_at, requests) / requests
    mixed = (share * before + (1.0 - share) * after)[veterans]
    return Run(
        requests=requests,
        veteran_ctr=veteran_ctr,
        newcomer_ctr=newcomer_ctr,
        random=float(mixed.mean()),
        best_item=best_item_ctr(population, later, share, users=veterans),
        oracle=float(share * before[veterans].max(axis=1).mean() + (1.0 - share) * after[veterans].max(axis=1).mean()),
        bound=np.array(group_bound(later, requests, seed, users=newcomers)),
        newcomer_best=best_item_ctr(later, users=newcomers),
    )


def _evidence(states: dict[int, PolicyState]) -> tuple[FloatArray, FloatArray]:
    """(users x arms) plays and reward sums of every user."""
    ordered = [states[u] for u in sorted(states)]
    return np.array([s.arrays["counts"] for s in ordered]), np.array([s.arrays["reward_sums"] for s in ordered])


def _segment_prior(policy: Policy[PolicyConfig], model: SegmentModel, state: PolicyState) -> PolicyState:
    """The state to select with: the user's evidence over the segments that explain it."""
    plays, sums, strength = model.prior(model.membership(state.arrays["counts"], state.arrays["reward_sums"]))
    prior = policy.new_state()
    prior.arrays["counts"][:], prior.arrays["reward_sums"][:], prior.n_updates = plays, sums, 1
    return policy.combine(state, prior, strength)
