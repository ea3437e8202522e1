"""Time decay: old evidence fades with a per-surface half-life, exactly and in any order.

Instead of shrinking accumulated statistics as time passes (which depends on *when* updates are
applied, and breaks on late events and replays), each update is *weighted up* by its event time
relative to a fixed epoch::

    weight(t) = 2 ** ((t - epoch) / half_life)

and added as usual (``count += w``, ``sum += w * reward``). Read at time ``now``, a statistic
divided by ``weight(now)`` is the classic exponentially decayed one (each event counts
``2 ** -((now - t) / half_life)``); ratios such as means need no division at all. An update's
weight depends only on its own event time, so updates commute: any arrival order, a late event or
a replay after a snapshot gives the same statistics (up to float rounding of the additions, and
bit for bit when the same updates are applied in the same order).

**Which time.** A decision's reward and every later correction of it (``fusion.py``) are weighted
by the *decision's* time, so corrections cancel exactly; the event time of the feedback only
decides whether it is late.

**Rebase.** Weights grow without bound (2 ** 1024 overflows a float), so when an update's
exponent would exceed :data:`REBASE_EXPONENT`, the owner moves the epoch to that update's time and
multiplies every accumulated statistic by ``rebase_factor(old, new, half_life)`` (:func:`rebase`).
The decision depends only on the stored epoch and the update's time, so a replay from a snapshot
(which stores the epoch) rebases at the same updates as the straight run. Evidence older than about
1000 half-lives before the epoch gets weight 0: it has faded out anyway.

>>> decay_weight(occurred_at_ms=86_400_000, half_life_s=86_400.0, epoch_ms=0)
2.0
>>> decay_weight(occurred_at_ms=0, half_life_s=86_400.0, epoch_ms=86_400_000)
0.5
>>> decay_weight(occurred_at_ms=123, half_life_s=None, epoch_ms=0)
1.0
>>> needs_rebase(occurred_at_ms=65 * 1000, half_life_s=1.0, epoch_ms=0)
True
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Rebase once weights pass 2 ** 64 (~1.8e19): far below float overflow (2 ** 1024) even after
# summing billions of updates, and old evidence is then 2 ** -64 of new, below float resolution.
REBASE_EXPONENT = 64.0


def _exponent(occurred_at_ms: int, half_life_s: float, epoch_ms: int) -> float:
    return (occurred_at_ms - epoch_ms) / (half_life_s * 1000.0)


def decay_weight(occurred_at_ms: int, half_life_s: float | None, epoch_ms: int) -> float:
    """``2 ** ((occurred_at_ms - epoch_ms) / half_life)``; 1.0 when ``half_life_s`` is None (no decay)."""
    if half_life_s is None:
        return 1.0
    return float(2.0 ** _exponent(occurred_at_ms, half_life_s, epoch_ms))


def needs_rebase(occurred_at_ms: int, half_life_s: float | None, epoch_ms: int) -> bool:
    """Whether an update at ``occurred_at_ms`` must first move the epoch to ``occurred_at_ms``."""
    return half_life_s is not None and _exponent(occurred_at_ms, half_life_s, epoch_ms) > REBASE_EXPONENT


def rebase_factor(old_epoch_ms: int, new_epoch_ms: int, half_life_s: float | None) -> float:
    """What accumulated statistics are multiplied by when the epoch moves from old to new.

    Moving it back (a clock behind an epoch set by an event from the future) is capped at
    2 ** REBASE_EXPONENT, so the factor stays finite whatever the skew.

    >>> rebase_factor(10**12, 0, half_life_s=1.0) == 2.0**REBASE_EXPONENT
    True
    """
    if half_life_s is None:
        return 1.0
    return float(2.0 ** min(-_exponent(new_epoch_ms, half_life_s, old_epoch_ms), REBASE_EXPONENT))


def epoch_for_update(epoch_ms: int | None, occurred_at_ms: int, half_life_s: float) -> tuple[int, float | None]:
    """The epoch an update at ``occurred_at_ms`` is weighed against, and the factor that statistics
    kept against ``epoch_ms`` must first be multiplied by (None: they stay as they are). Without an
    epoch yet, the update's own time is the epoch.

    >>> epoch_for_update(None, 5_000, half_life_s=1.0), epoch_for_update(0, 64_000, half_life_s=1.0)
    ((5000, None), (0, None))
    >>> epoch_for_update(0, 65_000, half_life_s=1.0) == (65_000, 2.0**-65)
    True
    """
    if epoch_ms is None:
        return occurred_at_ms, None
    if needs_rebase(occurred_at_ms, half_life_s, epoch_ms):
        return occurred_at_ms, rebase_factor(epoch_ms, occurred_at_ms, half_life_s)
    return epoch_ms, None


def present_factor(epoch_ms: int | None, now_ms: int, half_life_s: float | None) -> float | None:
    """What statistics kept against ``epoch_ms`` are multiplied by to read them as of ``now_ms``
    (each update then weighs ``2 ** -((now - t) / half_life)``); None when there is nothing to do.

    >>> present_factor(0, 2_000, half_life_s=1.0), present_factor(None, 2_000, 1.0), present_factor(0, 2_000, None)
    (0.25, None, None)
    """
    if half_life_s is None or epoch_ms is None:
        return None
    return rebase_factor(epoch_ms, now_ms, half_life_s)


def rebase(
    stats: Mapping[str, FloatArray], old_epoch_ms: int, new_epoch_ms: int, half_life_s: float | None
) -> dict[str, FloatArray]:
    """New arrays: ``stats`` re-expressed relative to ``new_epoch_ms`` (the inputs are not changed).

    >>> import numpy as np
    >>> rebase({"count": np.array([4.0, 2.0])}, 0, 2_000, half_life_s=1.0)["count"].tolist()
    [1.0, 0.5]
    """
    factor = rebase_factor(old_epoch_ms, new_epoch_ms, half_life_s)
    return {name: np.asarray(array, dtype=np.float64) * factor for name, array in stats.items()}


def present_value(stat: float, now_ms: int, half_life_s: float | None, epoch_ms: int) -> float:
    """A weighted statistic as of ``now_ms``: each event counted ``2 ** -((now - t) / half_life)``.

    >>> present_value(3.0, now_ms=1_000, half_life_s=1.0, epoch_ms=0)  # e.g. weights 1, 2 (t = 0, 1 s)
    1.5
    """
    return stat / decay_weight(now_ms, half_life_s, epoch_ms)
