"""Behaviour-based segments of a surface's users, a user's membership, and the prior it gives them.

**Fitting** (``fit_segments``) takes the evidence of the users who have some (per arm: plays and
reward sums, what a count-based policy's state holds). scikit-learn's ``MiniBatchKMeans`` clusters
the users by how their shrunk rate of every arm departs from the population's (in units of its
spread; unplayed arms are 0), and a few rounds of expectation-maximisation of the Beta-binomial
mixture below refine that start (clicks are too sparse for distances alone: on 300 users with
~36 plays each, k-means' partition has an adjusted Rand index of 0.27 with the true groups and
the refined one 0.67, where a classifier that knows the true group means gets 0.84). This is done
for every ``k`` from 1 to ``max_segments``, by ``FOLDS``-fold cross-validation over users' (arm)
cells on a sample of ``SELECTION_USERS`` users: a model fitted on the other folds predicts each
held-out cell under the membership the user's other cells give. The ``k`` kept is the smallest
whose held-out log-likelihood is within one standard error (of the per-user difference, and at
least ``MIN_GAIN`` nats) of the best ``k``'s: a noisy gain is not structure. ``k = 1`` (no
structure worth the name) is a valid answer: then the segment is the population. Fitting 4,000
users with 30 plays each costs ~0.7 s of CPU with 30 arms and ~1.6 s with 200 (``bench/segments.py``,
2026-11-29, the same with pooled or per-user means; 4.5 s and 9.9 s before the likelihood was
computed once per distinct cell, ``_Cells``).

**A segment** has, per arm, the mean reward of its users and the plays behind it, and one strength:
how strongly its users agree, estimated from them by empirical Bayes (``pooled_strength``), clamped
to [1, ``MAX_STRENGTH``]. The mean counts each user's rate once, weighted by what their plays are
worth when users' rates spread as much as the surface's do (``_user_weights``: Kleinman 1973's
estimator of a Beta-binomial mean), not every play alike: a bandit replays what a user liked, so
pooled plays speak for an arm's fans (on ``latent_groups`` seed 2 an arm rated 0.53 was worth 0.20
over users, and newcomers were served it first). Means are shrunk toward the population's by
``SEGMENT_SHRINK`` such weights. Measured against pooled plays (``bench/families.py --segments``,
bench/README.md "Segment means count users"): Thompson's newcomers gain at requests 4-6 on three
families of five and lose on none, at request 1 on ``latent_groups`` (0.74x to 0.84x the best item)
and lose on ``long_tail``; memberships recover true groups better.

**Membership** of a user is the posterior over segments given their own evidence: segment ``s``
explains ``x`` rewards in ``n`` plays of an arm with the Beta-binomial likelihood of
``Beta(k_s m_s, k_s (1 - m_s))`` (arms the user never played contribute nothing), weighted by the
segment's share of users. After a few plays of arms the segments disagree on, one segment
dominates; a new user's membership is the shares.

**The prior** of a user is the membership-weighted mix of the segments: per arm the weighted
mean, and the weighted strength. Serve it with ``policy.combine(user, prior_state, strength)``. The
service serves it from a finer mixture fitted beside the selected segments, of
``PRIOR_COMPONENTS`` (``fit_segments_and_mixture``): the selected ones are what people see and target.

>>> from rewardloop.simulator.families import FAMILIES
>>> from rewardloop.simulator import Population
>>> pop = Population(n_users=300, n_items=12, n_segments=3, taste_strength=2.5, base_ctr=0.05, seed=4)
>>> rng = np.random.default_rng(0)
>>> p = pop.click_matrix()
>>> plays = rng.poisson(3.0, size=p.shape).astype(float)
>>> clicks = rng.binomial(plays.astype(int), p).astype(float)
>>> model = fit_segments(plays, clicks, seed=0)
>>> model.k
3
>>> fresh = model.membership(np.zeros(12), np.zeros(12))
>>> bool(np.allclose(fresh, model.weights))
True
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import betaln
from sklearn.cluster import MiniBatchKMeans

from rewardloop.learning.segments.empirical_bayes import pooled_strength

FloatArray = NDArray[np.float64]

MAX_STRENGTH = 200.0
"""A user with this many plays of an arm weighs as much as their segment does on it."""
FALLBACK_STRENGTH = 10.0
"""A segment's strength when its users' evidence cannot estimate one."""
MIN_GAIN = 2.0
"""Nats of held-out log-likelihood a larger k must add over a smaller one."""
FOLDS = 3
SELECTION_USERS = 600
SHRINK_PLAYS = 2.0
"""Plays of the population's mean in each user's rates that the clustering sees."""
SEGMENT_SHRINK = 3.0
"""Users' worth of the population's mean in each segment's means (each user weighing as much as
``_user_weights`` says): an arm a segment's users played once and liked is not their favourite yet.
Newcomers at requests 4-6 on ``latent_groups``, ten seeds: 1.10x the best item at 1, 1.17x at 3 and at
8, 1.04x at 14 and at 20 (bench/README.md, "Segment means count users")."""
EM_ROUNDS = 10
MIN_INTERACTIONS = 5
"""Plays a user needs to take part in a fit."""
PRIOR_COMPONENTS = 16
"""Components of the mixture priors are served from (``fit_segments_and_mixture``; more if more
segments are allowed), at most a third of the users. Thompson's newcomers at requests 4-6, ten seeds,
on ``latent_groups``, ``popular``, ``long_tail``, ``few_interactions``, ``drift``, ``no_groups``: 1.31,
1.16, 0.87, 1.11, 0.71, 1.10x the best item from 5; 1.31, 1.16, 0.92, 1.10, 0.83, 1.24x from 8; 1.34,
1.17, 0.91, 1.07, 1.02, 1.37x from 16 (bench/README.md, "Priors from a finer mixture")."""


@dataclass(frozen=True, eq=False)
class SegmentModel:
    means: FloatArray
    """(k, arms): each segment's mean reward per arm, in (0, 1)."""
    plays: FloatArray
    """(k, arms): the plays of the segment's users behind those means."""
    strengths: FloatArray
    """(k,): how many observations a segment's means are worth to one of its users."""
    weights: FloatArray
    """(k,): the segments' shares of users (smoothed), summing to 1."""

    @property
    def k(self) -> int:
        return len(self.weights)

    @functools.cached_property
    def _beta(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(k, arms) each: the segments' Beta parameters a and b, and ``betaln(a, b)``."""
        a = self.strengths[:, None] * self.means
        b = self.strengths[:, None] * (1.0 - self.means)
        return a, b, np.asarray(betaln(a, b), dtype=np.float64)

    def log_evidence(self, plays: ArrayLike, sums: ArrayLike) -> FloatArray:
        """(k,): log-likelihood of one user's evidence under each segment, up to a shared constant
        (``_beta_binomial``; what does not depend on the user is computed once per model)."""
        n, x = np.asarray(plays, dtype=np.float64), np.asarray(sums, dtype=np.float64)
        played = np.flatnonzero(n > 0)
        a, b, log_beta = self._beta
        n, x = n[played], x[played]
        terms = betaln(a[:, played] + x, b[:, played] + n - x) - log_beta[:, played]
        return np.asarray(terms.sum(axis=1), dtype=np.float64)

    def membership(self, plays: ArrayLike, sums: ArrayLike) -> FloatArray:
        """(k,): the posterior over segments of a user with this evidence."""
        log_post = self.log_evidence(plays, sums) + np.log(self.weights)
        return np.asarray(np.exp(log_post - logsumexp(log_post)), dtype=np.float64)

    def prior(self, membership: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(plays, reward sums, strength) of the prior a user with ``membership`` starts from, per arm.

        Per arm, ``sums / plays`` is the membership-weighted mean of the segments' means, and
        ``plays`` the membership-weighted evidence behind them; build a prior policy state from them.
        The mean is weighted by membership only, not by plays: a segment plays most the arms it
        likes, so weighing by plays would give a new user every niche arm at its fans' rate.
        """
        pi = np.asarray(membership, dtype=np.float64)
        # The shrinkage plays count too: an arm no member played has the population's mean, and a
        # prior on it (an arm without one would be the policy's unplayed arm: epsilon-greedy's is 1.0).
        evidence = self.plays + SEGMENT_SHRINK
        plays = pi @ evidence
        # A segment's mean of an arm is worth as much to one user as the segment's users agree
        # (strength k), on every arm. Served less where the mean rests on few plays (1 / (1/k +
        # 1/plays): variances add), Thompson explored a 200-item tail arm by arm, each new user
        # anew: 0.62x the best item on `long_tail` and 0.41x at a newcomer's first request, against
        # 0.79x and 0.71x at k (bench/README.md, "Strength per segment, not per item").
        strength = np.full(self.means.shape[1], float(pi @ self.strengths))
        return plays, plays * (pi @ self.means), strength


def fit_segments(
    plays: ArrayLike,
    sums: ArrayLike,
    seed: int,
    *,
    max_segments: int = 8,
    min_interactions: int = MIN_INTERACTIONS,
    k: int | None = None,
) -> SegmentModel | None:
    """Segments of the users whose evidence is the rows of ``plays`` and ``sums`` (users x arms).

    Only users with at least ``min_interactions`` plays take part; None with fewer than 10 of them.
    With ``k``, exactly that many segments (at most a third of the users), not chosen by
    cross-validation: the finer mixture priors are served from (``prior_mixture``).
    Deterministic given ``seed``.
    """
    prepared = _prepared(plays, sums, min_interactions)
    if prepared is None:
        return None
    users, population = prepared
    chosen = _selected_k(users, population, seed, max_segments) if k is None else k
    return _fit(users, max(1, min(chosen, len(users.plays) // 3)), population, seed)


def fit_segments_and_mixture(
    plays: ArrayLike, sums: ArrayLike, seed: int, max_segments: int = 8
) -> tuple[SegmentModel, SegmentModel | None] | None:
    """The users' segments (``fit_segments``: their number chosen from the data) and the mixture of
    ``max(PRIOR_COMPONENTS, max_segments)`` that priors are served from (None if the segments are
    that many: the same fit).

    Why two: cross-validation keeps the fewest segments that explain held-out plays about as well as
    more, which is what people should see and target; newcomers are served better from more, finer
    ones (each a closer match to the few users a newcomer resembles). Thompson, ten seeds, served from
    16 components against the selected segments: newcomers at requests 4-6 1.34x the best item against
    1.17x on ``latent_groups``, 1.17x against 1.10x on ``popular``, 1.02x against 0.83x on ``drift``,
    0.91x on ``long_tail`` either way, 1.07x against 1.14x on ``few_interactions`` (bench/README.md,
    "Priors from a finer mixture").
    """
    prepared = _prepared(plays, sums, MIN_INTERACTIONS)
    if prepared is None:
        return None
    users, population = prepared
    cells = _Cells.of(users.plays, users.sums)  # both fits' likelihoods, computed once
    chosen = _selected_k(users, population, seed, max_segments)
    segments = _fit(users, chosen, population, seed, cells)
    components = max(1, min(max(PRIOR_COMPONENTS, max_segments), len(users.plays) // 3))
    return segments, None if components == chosen else _fit(users, components, population, seed, cells)


def _prepared(plays: ArrayLike, sums: ArrayLike, min_interactions: int) -> tuple[_UserRates, FloatArray] | None:
    """The users with at least ``min_interactions`` plays (None with fewer than 10 of them), and each
    arm's population mean."""
    n_all, x_all = np.asarray(plays, dtype=np.float64), np.asarray(sums, dtype=np.float64)
    active = n_all.sum(axis=1) >= min_interactions
    n, x = n_all[active], x_all[active]
    if len(n) < 10:
        return None
    # Each arm's population mean, shrunk toward the mean over arms: an arm nobody played is an
    # average arm, not a 50% one. (Shrunk by an empirical-Bayes strength over arms instead, Thompson
    # fell from 0.78x to 0.48x the best item on the long tail: adaptive plays hide the head's lead.)
    overall = float(np.clip(x.sum() / max(n.sum(), 1.0), 1e-3, 1.0 - 1e-3))
    population = np.clip((x.sum(axis=0) + SHRINK_PLAYS * overall) / (n.sum(axis=0) + SHRINK_PLAYS), 1e-3, 1.0 - 1e-3)
    return _UserRates.of(n, x), population


def _selected_k(users: _UserRates, population: FloatArray, seed: int, max_segments: int) -> int:
    """The number of segments cross-validation keeps (see the module's docstring)."""
    n, x = users.plays, users.sums
    # Every (user, arm) cell is held out in one of FOLDS folds; a model fitted on the other cells
    # scores it (scored on cells it saw, a larger k would always look better). On a sample of
    # SELECTION_USERS users: choosing k is most of the cost, and a few hundred users tell it.
    rng = np.random.default_rng([seed, 11])
    if len(n) > SELECTION_USERS:
        chosen_users = np.sort(rng.choice(len(n), SELECTION_USERS, replace=False))
        n_sel, x_sel = n[chosen_users], x[chosen_users]
    else:
        n_sel, x_sel = n, x
    fold = rng.integers(0, FOLDS, size=n_sel.shape)
    folds = []  # per fold, computed once for every k: the training evidence, its cells, the held-out cells
    for f in range(FOLDS):
        held_out = fold == f
        n_train, x_train = np.where(held_out, 0.0, n_sel), np.where(held_out, 0.0, x_sel)
        folds.append((_UserRates.of(n_train, x_train), _Cells.of(n_train, x_train), _Cells.of(n_sel, x_sel, held_out)))
    scores = []  # per k: (users,) held-out log-likelihood summed over folds
    for k in range(1, min(max_segments, len(n_sel) // 3) + 1):
        score = np.zeros(len(n_sel))
        for fold_users, train, held in folds:
            model = _fit(fold_users, k, population, seed, train)
            score += logsumexp(_log_posterior(model, train) + _log_evidence(model, held), axis=1)
        scores.append(score)
    # The smallest k within one standard error (of the per-user paired difference) of the best:
    # a noisy gain is not structure (the one-standard-error rule of Breiman et al. 1984).
    best = int(np.argmax([s.sum() for s in scores]))
    return 1 + next(
        k
        for k in range(best + 1)
        if scores[k].sum() >= scores[best].sum() - max(MIN_GAIN, np.std(scores[best] - scores[k]) * np.sqrt(len(n_sel)))
    )


def _fit(users: _UserRates, k: int, population: FloatArray, seed: int, cells: _Cells | None = None) -> SegmentModel:
    """k-means on the users' rate vectors, then EM_ROUNDS rounds of EM of the Beta-binomial mixture
    (``cells``: ``_Cells.of`` the users' evidence, if the caller has it)."""
    n, x = users.plays, users.sums
    labels = _cluster(_features(n, x, population), k, seed)
    responsibilities = np.eye(k)[labels]
    model = _segments(users, responsibilities, population)
    if k > 1:
        cells = _Cells.of(n, x) if cells is None else cells
        for _ in range(EM_ROUNDS):
            model = _segments(users, np.exp(_log_posterior(model, cells)), population)
    return model


@dataclass(frozen=True)
class _Cells:
    """The played (user, arm) cells of some evidence, with each distinct (arm, plays, rewards) once: a
    segment's likelihood of a cell depends on nothing else, and most cells repeat (one play, no
    reward), so the Beta functions, most of a fit's cost, are computed per distinct cell only (the
    same values in the same order as cell by cell: fits are unchanged to the bit)."""

    users: int
    rows: NDArray[np.intp]  # (cells,) the user of each cell, in row-major order
    inverse: NDArray[np.intp]  # (cells,) the distinct triple of each cell
    arms: NDArray[np.intp]  # (triples,)
    plays: FloatArray  # (triples,)
    sums: FloatArray  # (triples,)

    @classmethod
    def of(cls, n: FloatArray, x: FloatArray, where: NDArray[np.bool_] | None = None) -> _Cells:
        """The cells of ``n``, ``x`` with plays (and in ``where``, if given)."""
        rows, cols = np.nonzero(n > 0 if where is None else (n > 0) & where)  # only played cells count
        triples = np.stack([cols.astype(np.float64), n[rows, cols], x[rows, cols]])
        distinct, inverse = np.unique(triples, axis=1, return_inverse=True)
        return cls(len(n), rows, inverse.reshape(-1), distinct[0].astype(np.intp), distinct[1], distinct[2])


def _log_posterior(model: SegmentModel, cells: _Cells) -> FloatArray:
    """(users, k): log membership of every user."""
    log_post = _log_evidence(model, cells) + np.log(model.weights)
    return np.asarray(log_post - logsumexp(log_post, axis=1, keepdims=True), dtype=np.float64)


def _log_evidence(model: SegmentModel, cells: _Cells) -> FloatArray:
    """(users, k): ``SegmentModel.log_evidence`` of every user, over ``cells``."""
    distinct = _beta_binomial(model.strengths[:, None], model.means[:, cells.arms], cells.plays, cells.sums)
    terms = distinct[:, cells.inverse]
    out = np.zeros((cells.users, model.k))
    for s in range(model.k):
        out[:, s] = np.bincount(cells.rows, weights=terms[s], minlength=cells.users)
    return out


def logsumexp(values: FloatArray, axis: int | None = None, keepdims: bool = False) -> FloatArray:
    """``log(sum(exp(values)))`` without overflow, in numpy: scipy's takes ~200 us a call on a
    handful of values (its array-API dispatch), most of a membership's cost."""
    top = np.max(values, axis=axis, keepdims=True)
    out = top + np.log(np.sum(np.exp(values - top), axis=axis, keepdims=True))
    return np.asarray(out if keepdims else np.squeeze(out, axis=axis), dtype=np.float64)


def _beta_binomial(strength: ArrayLike, mean: ArrayLike, n: ArrayLike, x: ArrayLike) -> FloatArray:
    """Log Beta-binomial likelihood of ``x`` rewards in ``n`` plays under Beta(strength mean, strength (1 - mean)),
    without the binomial coefficient (the same for every segment); broadcast."""
    a = np.multiply(strength, mean)
    b = np.multiply(strength, np.subtract(1.0, mean))
    return np.asarray(betaln(a + x, b + np.subtract(n, x)) - betaln(a, b), dtype=np.float64)


def _features(n: FloatArray, x: FloatArray, population: FloatArray) -> FloatArray:
    """Each user's shrunk rate of every arm minus the population's, in units of its spread."""
    shrunk = (x + SHRINK_PLAYS * population) / (n + SHRINK_PLAYS)
    return np.asarray((shrunk - population) / np.sqrt(population * (1.0 - population)), dtype=np.float64)


def _cluster(features: FloatArray, k: int, seed: int) -> NDArray[np.intp]:
    if k == 1:
        return np.zeros(len(features), dtype=np.intp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's notes on memory leaks and n_init defaults
        kmeans = MiniBatchKMeans(n_clusters=k, n_init=3, random_state=seed, batch_size=1024, reassignment_ratio=0.0)
        return np.asarray(kmeans.fit_predict(features), dtype=np.intp)


@dataclass(frozen=True)
class _UserRates:
    """The users' evidence as segments' means need it: each user's rate of every arm they played,
    weighted as ``_user_weights`` says at the spread of every user's rates (``pooled_strength``)."""

    plays: FloatArray  # (users, arms)
    sums: FloatArray  # (users, arms)
    weights: FloatArray  # (users, arms): 0 where unplayed
    weighted_rates: FloatArray  # (users, arms): weights x the user's rate

    @classmethod
    def of(cls, n: FloatArray, x: FloatArray) -> _UserRates:
        estimate = pooled_strength(x, n)
        weights = _user_weights(n, FALLBACK_STRENGTH if estimate is None else min(estimate, MAX_STRENGTH))
        return cls(n, x, weights, weights * np.divide(x, n, out=np.zeros_like(x), where=n > 0))


def _user_weights(n: FloatArray, strength: float) -> FloatArray:
    """What a user's rate over ``n`` plays of an arm weighs in a mean over users whose rates are
    Beta-distributed at ``strength``: ``n / (1 + (n - 1) rho)``, ``rho = 1 / (strength + 1)`` the
    correlation of one user's plays (the inverse variance of their rate as an estimate of the mean,
    Kleinman 1973). One play weighs 1, many at most ``strength + 1``: a user who replayed an arm is
    still one user."""
    rho = 1.0 / (strength + 1.0)
    return np.asarray(n / (1.0 + np.maximum(n - 1.0, 0.0) * rho), dtype=np.float64)


def _segments(users: _UserRates, responsibilities: FloatArray, population: FloatArray) -> SegmentModel:
    """The segments whose users are weighted by ``responsibilities`` (users x k)."""
    k = responsibilities.shape[1]
    weights, weighted_rates = responsibilities.T @ users.weights, responsibilities.T @ users.weighted_rates
    means = np.clip((weighted_rates + SEGMENT_SHRINK * population) / (weights + SEGMENT_SHRINK), 1e-4, 1.0 - 1e-4)
    strengths = np.full(k, FALLBACK_STRENGTH)
    hard = responsibilities.argmax(axis=1)
    for s in range(k):
        members = hard == s
        strength = pooled_strength(users.sums[members], users.plays[members]) if members.sum() >= 5 else None
        if strength is not None:
            strengths[s] = min(strength, MAX_STRENGTH)
    shares = (responsibilities.sum(axis=0) + 1.0) / (len(users.plays) + k)
    return SegmentModel(means, responsibilities.T @ users.plays, strengths, shares)
