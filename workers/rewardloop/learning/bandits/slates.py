"""How a slate is drawn: slot by slot, without replacement, from the probabilities a policy gives.

A policy's one hook (``Policy._slate_rule``) returns a :data:`SlotRule`; ``draw_slate`` runs it
once per slot and records each pick's probability as its propensity (what off-policy evaluation
needs). The helpers here are shared by the algorithms that have the same slot rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]
# Given positions into the slate's `available` array still open, (scores, probabilities) over them.
SlotRule = Callable[[IndexArray], tuple[FloatArray, FloatArray]]
# What the hooks get as the context of a context-free policy: they never look at it.
NO_CONTEXT: FloatArray = np.empty(0)
NO_CONTEXT.flags.writeable = False


class Choice(NamedTuple):
    """One slot of a slate.

    ``propensity`` is the probability with which this arm was drawn for this slot, given the
    arms already placed in earlier slots (and, for Thompson, the slate's posterior samples).
    """

    arm: int
    score: float
    propensity: float
    slot: int


def uniform_over_maxima(scores: FloatArray) -> FloatArray:
    """Probability 1/ties on each maximal score, 0 elsewhere."""
    best = scores == scores.max()
    return best / np.count_nonzero(best)


def greedy(rule: SlotRule) -> SlotRule:
    """``rule`` without its exploration: the best of its scores among the open arms, ties uniformly."""

    def slot(remaining: IndexArray) -> tuple[FloatArray, FloatArray]:
        scores, _ = rule(remaining)
        return scores, uniform_over_maxima(scores)

    return slot


def thompson_slot_rule(scores: FloatArray, draws: FloatArray) -> SlotRule:
    """Slot rule of sampling-based algorithms given ``draws``, K posterior samples per arm (K x m).

    An open arm's probability is the fraction of the K rows whose largest value among the open
    arms is that arm's: exactly "pick one of the K samples uniformly and play its argmax", so
    the propensity is exact given the draws (see thompson.py). ``scores`` are reported as is.
    """

    def slot(remaining: IndexArray) -> tuple[FloatArray, FloatArray]:
        winners = np.argmax(draws[:, remaining], axis=1)
        return scores[remaining], np.bincount(winners, minlength=len(remaining)) / len(winners)

    return slot


def draw(probabilities: FloatArray, rng: np.random.Generator) -> int:
    """Index drawn with the given probabilities; zero-probability entries are never drawn."""
    cumulative = np.cumsum(probabilities)
    pick = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    if pick == len(cumulative):  # u * total rounded up to total: take the last drawable entry
        pick = int(np.flatnonzero(probabilities)[-1])
    return pick


def draw_slate(rule: SlotRule, arms: IndexArray, n: int, rng: np.random.Generator) -> list[Choice]:
    """``n`` distinct arms of ``arms``, each slot drawn with ``rng`` by ``rule`` over the arms still open."""
    remaining = np.arange(len(arms))
    slate = []
    for slot in range(n):
        scores, probabilities = rule(remaining)
        pick = draw(probabilities, rng)
        arm = int(arms[remaining[pick]])
        slate.append(Choice(arm, float(scores[pick]), float(probabilities[pick]), slot))
        remaining = np.concatenate((remaining[:pick], remaining[pick + 1 :]))
    return slate


def check_available(available: npt.ArrayLike, n_arms: int) -> IndexArray:
    """``available`` as distinct arm indices in [0, n_arms), non-empty; ValueError otherwise."""
    arms = np.asarray(available)
    if arms.ndim != 1 or arms.size == 0 or arms.dtype.kind not in "iu":
        raise ValueError(
            f"available must be a non-empty 1-D array of integer arm indices, got shape {arms.shape} dtype {arms.dtype}"
        )
    if arms.min() < 0 or arms.max() >= n_arms:
        raise ValueError(f"available arms must be in [0, {n_arms}), got {arms.min()}..{arms.max()}")
    seen = np.zeros(n_arms, dtype=bool)
    seen[arms] = True
    if np.count_nonzero(seen) != arms.size:  # a mask is ~3x faster than np.unique at 100 arms
        raise ValueError("available arms must be distinct")
    return arms.astype(np.intp, copy=False)
