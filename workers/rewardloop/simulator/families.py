"""Population families: the shapes of audience a default configuration must serve without tuning.

Each family is a recipe for :class:`Population` (the seed is the caller's) and how many requests
each user makes. They differ where per-user learning is easy or hard: how much users of one taste
group agree, how much an item's popularity outweighs taste, how long the catalogue is and how few
interactions a user gives.

* ``latent_groups``: 30 items, four taste groups whose members share 70% of their taste, clicks
  from 0.1% to about 50%, 60 requests per user. Knowing a user's group is worth a lot.
* ``long_tail``: 200 items with a popular head, overlapping groups (members share 40%), 30
  requests: most items are never tried by a given user.
* ``popular``: 50 items whose popularity dominates taste: serving the best item to everyone is
  hard to beat, and personalising must not lose to it.
* ``no_groups``: 30 items, every user their own taste: nothing to borrow from others but the
  popularity of items.
* ``few_interactions``: 30 items, 8 requests per user from 600 users: users leave before a
  per-user model learns much.
* ``drift``: ``latent_groups`` whose tastes change halfway: at request 30 of 60 every user's
  group, the groups' tastes and the user's own are redrawn (``Population.shifted``; the catalogue
  and the items' popularity stay). What a user and their group taught the model before is wrong
  after; newcomers arrive in the changed world.

>>> family = FAMILIES["latent_groups"]
>>> pop = family.population(seed=0)
>>> pop.n_items, family.requests
(30, 60)
>>> best = best_item_ctr(pop)
>>> round(pop.random_ctr(), 3), round(best, 3), round(pop.oracle_ctr(), 3)
(0.088, 0.174, 0.47)

The bound a policy that knows the true groups can reach (see :func:`group_bound`): at request 1 it
serves the best item, and its gain over that item grows as a user's clicks reveal their group.

>>> bound = group_bound(pop, requests=6, seed=0)
>>> [round(v / best, 2) for v in bound]
[1.0, 1.23, 1.5, 1.5, 1.53, 1.62]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rewardloop.simulator.population import Population

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]
SHIFT_SEED = 1_000
"""Drifting families redraw tastes from ``taste_seed = SHIFT_SEED + seed``."""


@dataclass(frozen=True)
class Family:
    """A population recipe: ``Population(**settings, seed=seed)``, each user making ``requests`` requests."""

    name: str
    settings: dict[str, Any] = field(hash=False)
    requests: int
    shift_at: int | None = None
    """Taste drift: from this (0-based) request on, users behave as ``drift(seed)`` says."""

    def population(self, seed: int) -> Population:
        """The users as they are at their first request."""
        return Population(seed=seed, **self.settings)

    def drift(self, seed: int) -> tuple[int, Population] | None:
        """``(shift_at, later)``: from that request on users behave as ``later`` (and newcomers
        arrive into it); None without drift."""
        if self.shift_at is None:
            return None
        return self.shift_at, self.population(seed).shifted(seed=SHIFT_SEED + seed)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            "latent_groups",
            dict(n_users=160, n_items=30, n_segments=4, taste_strength=2.0, base_ctr=0.03, individuality=0.3),
            requests=60,
        ),
        Family(
            "long_tail",
            dict(
                n_users=300,
                n_items=200,
                n_segments=5,
                taste_strength=1.6,
                base_ctr=0.02,
                individuality=0.6,
                item_popularity=1.0,
            ),
            requests=30,
        ),
        Family(
            "popular",
            dict(n_users=160, n_items=50, n_segments=4, taste_strength=1.5, base_ctr=0.04, item_popularity=1.0),
            requests=60,
        ),
        Family(
            "no_groups",
            dict(n_users=160, n_items=30, n_segments=1, taste_strength=2.0, base_ctr=0.03, individuality=1.0),
            requests=60,
        ),
        Family(
            "few_interactions",
            dict(n_users=600, n_items=30, n_segments=4, taste_strength=2.0, base_ctr=0.03, individuality=0.3),
            requests=8,
        ),
        Family(
            "drift",
            dict(n_users=160, n_items=30, n_segments=4, taste_strength=2.0, base_ctr=0.03, individuality=0.3),
            requests=60,
            shift_at=30,
        ),
    )
}


def best_item_ctr(
    population: Population, later: Population | None = None, share: float = 1.0, users: IntArray | None = None
) -> float:
    """Click rate of the population's single best item, served to everyone (or to ``users``).

    With ``later``: the best item over requests of which ``share`` meet ``population`` and the
    rest ``later`` (a taste shift), served to everyone at each of them. With ``users``, the item is
    still the whole population's best, and its rate is theirs: what serving it would have given this
    cohort (a cohort's own best item in hindsight is a maximum over noisy means, biased upward).
    """
    clicks = population.click_matrix()
    if later is not None:
        clicks = share * clicks + (1.0 - share) * later.click_matrix()
    best = int(clicks.mean(axis=0).argmax())
    return float(clicks[:, best].mean() if users is None else clicks[users, best].mean())


def group_bound(population: Population, requests: int, seed: int = 0, users: IntArray | None = None) -> list[float]:
    """Expected click rate at each of a new user's first ``requests`` requests under a policy that knows
    every group's mean click probabilities (not the user's own) and which users form a group.

    It serves the item with the highest click probability averaged over the groups, weighted by the
    posterior of the user's group given their clicks so far (each click or not a Bernoulli draw of
    the group mean): the greedy Bayes policy the issue's bar is set against. Averaged over every
    user, with clicks drawn from ``seed``; the value at a request is the chosen item's true click
    probability for that user. With ``users``, averaged over them only (the same draws).
    """
    clicks = population.click_matrix()
    groups = np.array([population.segment_of(u) for u in range(population.n_users)])
    means = np.array([clicks[groups == g].mean(axis=0) for g in range(population.n_segments)])
    weights = np.bincount(groups, minlength=population.n_segments) / population.n_users
    log_hit, log_miss = np.log(np.clip(means, 1e-12, 1.0)), np.log(np.clip(1.0 - means, 1e-12, 1.0))
    rng = np.random.default_rng(seed)
    values = np.zeros(requests)
    log_post = np.tile(np.log(weights), (population.n_users, 1))
    for t in range(requests):
        post = np.exp(log_post - log_post.max(axis=1, keepdims=True))
        post /= post.sum(axis=1, keepdims=True)
        chosen = (post @ means).argmax(axis=1)
        truth = clicks[np.arange(population.n_users), chosen]
        values[t] = truth.mean() if users is None else truth[users].mean()
        clicked = rng.random(population.n_users) < truth
        log_post += np.where(clicked[:, None], log_hit[:, chosen].T, log_miss[:, chosen].T)
    return values.tolist()
