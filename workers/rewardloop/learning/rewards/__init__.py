"""The reward engine: feedback signals in, one reward per decision-item out (pure, no I/O).

- ``signals``: the catalogue (15 signals, unit, range, polarity, aggregate, default transform);
- ``config``: a surface's reward rules (weights, transforms, caps, window, default, late rule, half-life);
- ``fusion``: the events of one decision-item fused into one reward, order-independent and idempotent;
- ``quality``: which events are rejected, flagged (kept, never train) or accepted;
- ``decay``: event-time weights that make old evidence fade, exact across snapshots and replays.

>>> config = RewardConfig.from_dict({"signals": {"dwell": {"weight": 0.5}}, "half_life_seconds": 86_400})
>>> events = [Event("a", Signal.DWELL, 15.0, 1_000, 1_000), Event("b", Signal.RATING, 4.0, 2_000, 2_000)]
>>> fuse(events, config)
1.0
>>> fuse(events[:1], config)
0.25
"""

from rewardloop.learning.params import ConfigError
from rewardloop.learning.rewards.config import LateRule, RewardConfig, SignalRule, default_rule
from rewardloop.learning.rewards.decay import (
    REBASE_EXPONENT,
    decay_weight,
    needs_rebase,
    present_value,
    rebase,
    rebase_factor,
)
from rewardloop.learning.rewards.fusion import (
    DecisionWindow,
    EventConflict,
    FusionState,
    Timing,
    fuse,
    late_event_trains,
)
from rewardloop.learning.rewards.quality import (
    BurstDetector,
    EventContext,
    Outcome,
    QualityConfig,
    Verdict,
    assess,
    counts_toward_burst,
)
from rewardloop.learning.rewards.signals import (
    SIGNALS,
    Aggregate,
    Event,
    Polarity,
    Signal,
    SignalSpec,
    Transform,
    check_value,
    parse_signal,
)

__all__ = [
    "REBASE_EXPONENT",
    "SIGNALS",
    "Aggregate",
    "BurstDetector",
    "ConfigError",
    "DecisionWindow",
    "Event",
    "EventConflict",
    "EventContext",
    "FusionState",
    "LateRule",
    "Outcome",
    "Polarity",
    "QualityConfig",
    "RewardConfig",
    "Signal",
    "SignalRule",
    "SignalSpec",
    "Timing",
    "Transform",
    "Verdict",
    "assess",
    "check_value",
    "counts_toward_burst",
    "decay_weight",
    "default_rule",
    "fuse",
    "late_event_trains",
    "needs_rebase",
    "parse_signal",
    "present_value",
    "rebase",
    "rebase_factor",
]
