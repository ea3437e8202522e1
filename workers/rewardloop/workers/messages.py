"""What the gRPC front sends to a shard and gets back: plain, picklable values.

The front has validated every field before a call leaves it; a shard only rejects what
it alone can judge (an unknown decision, an item the decision did not show).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rejected:
    """A caller's mistake found by the shard, with the gRPC status name to return."""

    code: str  # "INVALID_ARGUMENT" | "NOT_FOUND"
    message: str
    # The request field at fault (its path in the request), for machine-readable error details.
    field: str = ""


@dataclass(frozen=True)
class RecommendCall:
    pseudonym: str
    surface: str
    n: int
    candidates: tuple[str, ...] = ()
    # The surface's feature vector for this request (empty for context-free surfaces).
    features: tuple[float, ...] = ()
    # The user's segment for cold-start priors ("" when the surface has none).
    segment: str = ""
    # The user's (experiment, variant) assignments of the experiments covering the surface, as the
    # front's Assigner made them: a variant with a policy for the surface decides it (policy experiments).
    assignments: tuple[tuple[str, str], ...] = ()
    trace: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ChosenItem:
    item_id: str
    score: float
    propensity: float
    slot: int


@dataclass(frozen=True)
class Decision:
    decision_id: str
    items: tuple[ChosenItem, ...]
    policy: str
    model_version: str


@dataclass(frozen=True)
class FeedbackCall:
    pseudonym: str
    event_id: str
    item_id: str
    signal: int
    value: float
    occurred_at_ms: int
    decision_id: str = ""
    surface: str = ""
    trace: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Recorded:
    duplicate: bool
    reward: float
    # Why the event trains nothing (recorded anyway); empty when it trains.
    flag: str = ""
