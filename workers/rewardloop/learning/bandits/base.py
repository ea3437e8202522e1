"""What every bandit policy shares: the config base and the ``Policy`` class.

A policy is two objects. Its *config* (a frozen dataclass per algorithm, e.g. ``UCB1``) holds
hyper-parameters only, validates them on construction and round-trips through a plain dict.
Its *implementation* (a :class:`Policy` subclass built by ``make_policy``) holds no learned
state: that lives in a :class:`PolicyState` the caller owns (``state.py``, with its bytes).

``Policy`` owns the bookkeeping (per-arm ``counts`` and ``reward_sums``, float64), input checks,
:meth:`Policy.select` (slot drawing in ``slates.py``) and, for algorithms whose state is additive
sufficient statistics (``supports_prior``), :meth:`Policy.merge` and :meth:`Policy.combine`. An
algorithm implements one hook, :meth:`Policy._slate_rule`; those with other bookkeeping also
override ``new_state``, ``_update``, ``_check_values`` and, if they support priors, ``_combine``.

Contextual algorithms (``contextual = True``) learn from and decide on a context vector ``x``
of length ``context_dim`` (float64, bias term included) that ``update`` and ``select`` require;
the others ignore any context passed. EXP3 (``needs_propensity = True``) also needs the
probability with which the updated arm was drawn.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from rewardloop.learning.bandits.slates import (
    NO_CONTEXT,
    Choice,
    FloatArray,
    IndexArray,
    SlotRule,
    check_available,
    draw_slate,
    greedy,
)
from rewardloop.learning.bandits.state import (
    ArmRows,
    PolicyState,
    check_counts,
    check_layout,
    decode_state,
    encode_state,
)
from rewardloop.learning.params import prior_strength


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """Base of the per-algorithm hyper-parameter dataclasses (frozen, hashable, validated)."""

    name: ClassVar[str]
    selection_only: ClassVar[frozenset[str]] = frozenset()  # steer choices, not the state: not fingerprinted

    def to_dict(self) -> dict[str, Any]:
        """Hyper-parameters as plain JSON-able values; ``config_from_dict`` reads them back."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def _set(self, field: str, check: Callable[[str, object], object]) -> None:
        # Frozen dataclass: store the checked, normalised value (e.g. 1 -> 1.0) so that
        # to_dict() and the fingerprints built from it are canonical.
        object.__setattr__(self, field, check(field, getattr(self, field)))


ConfigT = TypeVar("ConfigT", bound=PolicyConfig)


class Policy(ABC, Generic[ConfigT]):
    """A bandit algorithm over ``n_arms`` arms; learned state is passed in, never kept.

    Subclasses implement :meth:`_slate_rule`. The ones with other bookkeeping than per-arm
    counts and reward sums (e.g. LinUCB's matrices) also override ``new_state``, ``_update``
    and ``_check_values`` (and ``_combine`` when they support priors); serialization stays
    generic.
    """

    contextual: ClassVar[bool] = False
    """True when ``update`` and ``select`` need the context vector (``context_dim`` >= 1)."""
    supports_prior: ClassVar[bool] = False
    # ``combine`` takes a strength per arm (count-based states; not the linear policies').
    per_arm_strength: ClassVar[bool] = False
    """True when the state is additive sufficient statistics, so ``merge`` and ``combine`` work."""
    needs_propensity: ClassVar[bool] = False
    """True when ``update`` needs the propensity the updated arm was drawn with (EXP3)."""
    whole_arrays: ClassVar[frozenset[str]] = frozenset()
    """The state's arrays that are not per arm (first axis = arm): kept whole at rest (``rest``)."""

    def __init__(
        self,
        config: ConfigT,
        n_arms: int,
        context_dim: int = 0,
        arm_features: npt.ArrayLike | None = None,
    ) -> None:
        if isinstance(n_arms, bool) or not isinstance(n_arms, int | np.integer) or not 1 <= n_arms < 2**32:
            raise ValueError(f"n_arms must be an integer in [1, 2**32), got {n_arms!r}")
        if isinstance(context_dim, bool) or not isinstance(context_dim, int | np.integer) or context_dim < 0:
            raise ValueError(f"context_dim must be a non-negative integer, got {context_dim!r}")
        if self.contextual and context_dim < 1:
            raise ValueError(f"{config.name} is contextual: context_dim must be >= 1, got {context_dim}")
        self.config = config
        self.n_arms = int(n_arms)
        # Context-free algorithms ignore the context (and arm_features): the service may pass
        # the same arguments to every surface's policy.
        self.context_dim = int(context_dim) if self.contextual else 0

    def __repr__(self) -> str:
        context = f", context_dim={self.context_dim}" if self.contextual else ""
        return f"{type(self).__name__}({self.config!r}, n_arms={self.n_arms}{context})"

    @property
    def name(self) -> str:
        return self.config.name

    # --- learning -----------------------------------------------------------------------

    def new_state(self) -> PolicyState:
        """State of a user who has never been seen."""
        return PolicyState({"counts": np.zeros(self.n_arms), "reward_sums": np.zeros(self.n_arms)})

    def update(
        self,
        state: PolicyState,
        arm: int,
        reward: float,
        context: npt.ArrayLike | None = None,
        propensity: float | None = None,
        weight: float = 1.0,
    ) -> None:
        """Learn one observed ``reward`` in [0, 1] for ``arm``, in place.

        ``context`` (the vector the decision was made with) is required by contextual
        algorithms and ignored by the others; ``propensity`` (the probability the arm was drawn
        with, ``Choice.propensity``) is required when ``needs_propensity`` and ignored otherwise.
        ``weight`` >= 0 counts the observation as that many (time decay, ``rewards/decay.py``;
        evidence old enough for its weight to underflow counts 0); only ``supports_prior``
        algorithms, whose state is additive statistics, take one other than 1. Every input is
        checked before ``state`` changes.

        Deterministic: replaying the same (arm, reward, context, propensity) sequence onto the
        same state gives bit-identical arrays, which is how a user's state is rebuilt from the
        feedback log.
        """
        index = operator.index(arm)
        if not 0 <= index < self.n_arms:
            raise ValueError(f"arm must be in [0, {self.n_arms}), got {arm}")
        value = float(reward)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"reward must be in [0, 1], got {reward}")
        x = self._check_context(context) if self.contextual else NO_CONTEXT
        p = self._check_propensity(propensity) if self.needs_propensity else math.nan
        if weight == 1.0:
            self._update(state, index, value, x, p)
        else:
            self._accumulate(state, index, value, x, self._check_weight(weight))
        state.n_updates += 1

    def _update(
        self,
        state: PolicyState,
        arm: int,
        reward: float,
        context: FloatArray,
        propensity: float,
    ) -> None:
        """Apply one checked observation to ``state`` in place (``n_updates`` is the caller's)."""
        self._accumulate(state, arm, reward, context, 1.0)

    def _accumulate(self, state: PolicyState, arm: int, reward: float, context: FloatArray, weight: float) -> None:
        """Add one checked observation counted ``weight`` times to additive statistics, in place.

        The update of ``supports_prior`` algorithms (the others override ``_update`` instead).
        """
        state.arrays["counts"][arm] += weight
        state.arrays["reward_sums"][arm] += weight * reward

    def _check_weight(self, weight: float) -> float:
        if not self.supports_prior:
            raise ValueError(
                f"{self.name} does not take weighted updates: its state is not additive sufficient statistics"
            )
        w = float(weight)
        if not (0.0 <= w < math.inf):
            raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
        return w

    def scale(self, state: PolicyState, factor: float) -> PolicyState:
        """A new state in which every update ``state`` learned counts ``factor`` times as much.

        Every array of a ``supports_prior`` state is a sum over its updates (a new state is all
        zeros), so this multiplies them. Time decay reads a state this way (``factor`` =
        1 / weight(now)) and moves its epoch with it (``rewards/decay.py``). ``n_updates`` is kept.

        >>> from rewardloop.learning.bandits import UCB1, make_policy
        >>> policy = make_policy(UCB1(), n_arms=2)
        >>> state = policy.new_state()
        >>> policy.update(state, arm=0, reward=1.0, weight=4.0)
        >>> policy.scale(state, 0.25).arrays["counts"].tolist()
        [1.0, 0.0]
        """
        self._require_prior_support("scale")
        self._check_layout(state.arrays)
        f = float(factor)
        if not (0.0 <= f < math.inf):
            raise ValueError(f"factor must be a finite number >= 0, got {factor!r}")
        return PolicyState({name: array * f for name, array in state.arrays.items()}, state.n_updates)

    def revise(
        self,
        state: PolicyState,
        arm: int,
        old_reward: float,
        new_reward: float,
        context: npt.ArrayLike | None = None,
        propensity: float | None = None,
        age: int = 0,
        weight: float = 1.0,
    ) -> None:
        """Change the reward of one observation ``state`` already learned, in place.

        The observation is the update of ``arm`` with ``old_reward`` (and the same ``context``
        and ``propensity``) made ``age`` updates ago (0: the latest). Afterwards ``state`` is the
        state that would have learned ``new_reward`` in its place, up to float rounding: every
        algorithm's statistics are linear in the reward, so this is an addition, and discounted
        ones weigh it by their discount since then. The sliding window forgets an observation
        that has left the window, so revising one changes nothing. ``n_updates`` is unchanged:
        this is how a decision's fused reward is corrected when more feedback about it arrives.
        ``weight`` is what the observation counts as now (``update``'s weight, times any
        ``scale`` since).
        """
        index = operator.index(arm)
        if not 0 <= index < self.n_arms:
            raise ValueError(f"arm must be in [0, {self.n_arms}), got {arm}")
        for name, value in (("old_reward", old_reward), ("new_reward", new_reward)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        steps = operator.index(age)
        if not 0 <= steps < state.n_updates:
            raise ValueError(f"age must be in [0, {state.n_updates}) (updates learned), got {age}")
        x = self._check_context(context) if self.contextual else NO_CONTEXT
        p = self._check_propensity(propensity) if self.needs_propensity else math.nan
        delta = float(new_reward) - float(old_reward)
        if weight != 1.0:
            # The revise of additive statistics is linear in delta and blind to age.
            delta *= self._check_weight(weight)
        if delta != 0.0:
            self._revise(state, index, delta, x, p, steps)

    def _revise(
        self, state: PolicyState, arm: int, delta: float, context: FloatArray, propensity: float, age: int
    ) -> None:
        """Add ``delta`` to the reward of a checked observation learned ``age`` updates ago."""
        state.arrays["reward_sums"][arm] += delta

    def _update_discounted(self, state: PolicyState, arm: int, reward: float, gamma: float) -> None:
        """Counts and reward sums of every arm times ``gamma``, then the new observation added.

        The discount is per update (a step), not per second, so a replay is bit-identical.
        """
        counts, sums = state.arrays["counts"], state.arrays["reward_sums"]
        counts *= gamma
        sums *= gamma
        counts[arm] += 1.0
        sums[arm] += reward

    def _check_context(self, context: npt.ArrayLike | None) -> FloatArray:
        if context is None:
            raise ValueError(f"context is required by {self.name}: a vector of {self.context_dim} floats")
        try:
            x = np.asarray(context, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"context must be a vector of {self.context_dim} floats: {exc}") from None
        if x.shape != (self.context_dim,):
            raise ValueError(f"context must have shape ({self.context_dim},), got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"context must be finite, got {x.tolist()}")
        return x

    def _check_propensity(self, propensity: float | None) -> float:
        if propensity is None:
            raise ValueError(f"propensity is required by {self.name}: the probability the arm was drawn with")
        p = float(propensity)
        if not 0.0 < p <= 1.0:
            raise ValueError(f"propensity must be in (0, 1], got {propensity}")
        return p

    def _means(self, state: PolicyState, arms: IndexArray, unplayed: float) -> FloatArray:
        """Empirical mean reward of ``arms``; ``unplayed`` for arms never played."""
        counts, sums = state.arrays["counts"][arms], state.arrays["reward_sums"][arms]
        return np.divide(sums, counts, out=np.full(len(arms), unplayed), where=counts > 0)

    # --- priors: population and segment statistics ----------------------------------------

    def merge(self, states: Sequence[PolicyState]) -> PolicyState:
        """The state all updates of all ``states`` would give applied to one new state.

        Array-wise ``new_state + sum_i (s_i - new_state)``, ``n_updates`` summed: how per-shard
        population statistics become one. Only for ``supports_prior`` algorithms.
        """
        self._require_prior_support("merge")
        if not states:
            raise ValueError("merge needs at least one state")
        for state in states:
            self._check_layout(state.arrays)
        fresh = self.new_state()
        merged = fresh.copy()
        for state in states:
            for name, total in merged.arrays.items():
                total += state.arrays[name] - fresh.arrays[name]
        merged.n_updates = sum(state.n_updates for state in states)
        return merged

    def combine(self, state: PolicyState, prior: PolicyState, strength: float | FloatArray) -> PolicyState:
        """The state to select with for a user whose own evidence is ``state``, shrunk toward ``prior``.

        ``prior`` (a population or segment state of this policy, possibly itself a ``combine``
        result) weighs as ``strength`` >= 0 pseudo-observations per arm it has data on; the
        user's own evidence outweighs it as it grows. Inputs are not modified; the result is
        for ``select`` only (it is not a state updates could produce, so do not store it).
        Only for ``supports_prior`` algorithms; ``per_arm_strength`` ones also take a strength per arm.
        """
        self._require_prior_support("combine")
        weight = prior_strength(strength, self.n_arms if self.per_arm_strength else None)
        self._check_layout(state.arrays)
        self._check_layout(prior.arrays)
        return state.copy() if isinstance(weight, float) and weight == 0.0 else self._combine(state, prior, weight)

    def _combine(self, state: PolicyState, prior: PolicyState, strength: float | FloatArray) -> PolicyState:
        """Count-based shrinkage: ``strength`` pseudo-rewards at the prior's mean, per arm it has data on."""
        combined = state.copy()
        prior_counts = prior.arrays["counts"]
        known = np.flatnonzero(prior_counts > 0)
        weight = strength[known] if isinstance(strength, np.ndarray) else strength
        combined.arrays["counts"][known] += weight
        prior_means = prior.arrays["reward_sums"][known] / prior_counts[known]
        combined.arrays["reward_sums"][known] += weight * prior_means
        return combined

    def _require_prior_support(self, operation: str) -> None:
        if not self.supports_prior:
            raise ValueError(
                f"{self.name} does not support {operation}: its state is not additive sufficient "
                "statistics (supports_prior is False)"
            )

    # --- deciding -----------------------------------------------------------------------

    @abstractmethod
    def _slate_rule(
        self, state: PolicyState, available: IndexArray, rng: np.random.Generator, context: FloatArray
    ) -> SlotRule:
        """The algorithm's one hook, called once per slate.

        Returns a function that, given the positions (into ``available``) of the arms still
        open, returns ``(scores, probabilities)`` over exactly those arms, with probabilities
        summing to 1. Anything random that should hold for the whole slate (Thompson's
        posterior samples) is drawn here, from ``rng`` only. ``context`` is the checked
        context vector (``NO_CONTEXT`` for context-free algorithms).
        """

    def select(
        self,
        state: PolicyState,
        available: npt.ArrayLike,
        n: int,
        rng: np.random.Generator,
        context: npt.ArrayLike | None = None,
        exploit: bool = False,
    ) -> list[Choice]:
        """A slate of ``n`` distinct arms from ``available``, drawn slot by slot without replacement.

        Each slot's arm is drawn with ``rng`` from the algorithm's probabilities over the open
        arms (its propensity); with ``exploit``, the best-scoring open arm (ties uniformly).
        ``context`` is required by contextual algorithms only. Inputs are not modified.
        """
        arms = self._check_available(available)
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= len(arms):
            raise ValueError(
                f"n must be an integer in [1, {len(arms)}] (the number of available arms), got {n!r}",
            )
        rule = self._slate_rule(state, arms, rng, self._check_context(context) if self.contextual else NO_CONTEXT)
        return draw_slate(greedy(rule) if exploit else rule, arms, n, rng)

    def distribution(
        self,
        state: PolicyState,
        available: npt.ArrayLike,
        rng: np.random.Generator,
        context: npt.ArrayLike | None = None,
    ) -> FloatArray:
        """Probability of each arm of ``available`` (same order) being drawn into the first slot.

        What off-policy evaluation needs of a target policy. For algorithms that randomise once
        per slate (Thompson samples), the probabilities are conditional on that draw, from ``rng``.

        >>> from rewardloop.learning.bandits import EpsilonGreedy, make_policy
        >>> policy = make_policy(EpsilonGreedy(epsilon=0.2), n_arms=2)
        >>> state = policy.new_state()
        >>> policy.update(state, 0, 1.0); policy.update(state, 1, 0.0)
        >>> policy.distribution(state, np.arange(2), np.random.default_rng(0)).tolist()
        [0.9, 0.1]
        """
        arms = self._check_available(available)
        x = self._check_context(context) if self.contextual else NO_CONTEXT
        _, probabilities = self._slate_rule(state, arms, rng, x)(np.arange(len(arms)))
        return np.asarray(probabilities, dtype=np.float64)

    def _check_available(self, available: npt.ArrayLike) -> IndexArray:
        return check_available(available, self.n_arms)

    # --- bytes --------------------------------------------------------------------------

    def dump_state(self, state: PolicyState) -> bytes:
        """``state`` as versioned bytes (format in ``bandits/state.py``): the arm rows a new state
        does not have, so its size grows with the arms the state learned about, not the catalogue."""
        if not state.at_rest:
            self._check_layout(state.arrays)
        return encode_state(self.name, self.n_arms, state, self.arm_rows)

    def load_state(self, blob: bytes) -> PolicyState:
        """The state ``dump_state`` wrote, for this algorithm and ``n_arms``; ValueError otherwise."""
        state = decode_state(blob, self.name, self.n_arms, self.arm_rows)
        self._check_layout(state.arrays)
        self._check_values(state)
        return state

    def rest(self, state: PolicyState) -> None:
        """Keep only ``state``'s arm rows that a new state lacks (``PolicyState``: at rest)."""
        state.rest(self.arm_rows)

    @cached_property
    def arm_rows(self) -> ArmRows:
        """The sparse layout of this policy's states (``state.py``)."""
        return ArmRows(self.new_state().arrays, self.whole_arrays, self.n_arms)

    @cached_property
    def _layout(self) -> dict[str, tuple[np.dtype[Any], tuple[int, ...]]]:
        return {name: (array.dtype, array.shape) for name, array in self.new_state().arrays.items()}

    def _check_layout(self, arrays: dict[str, npt.NDArray[Any]]) -> None:
        check_layout(self.name, arrays, self._layout)

    def _check_values(self, state: PolicyState) -> None:
        """Reject loaded states that no sequence of updates could have produced."""
        self._check_counts(state)
        if not self.supports_prior:  # weighted updates (decay) make any counts >= 0 possible
            total = state.arrays["counts"].sum()
            if total != state.n_updates:
                raise ValueError(
                    f"corrupt {self.name} policy state: counts sum to {total}, n_updates={state.n_updates}",
                )

    def _check_counts(self, state: PolicyState) -> None:
        check_counts(self.name, state)
