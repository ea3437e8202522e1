"""A reward-ledger entry: one decision-item's reward so far and where the policy learned it
(``ledger.py`` says how feedback trains), with its codec in a snapshot's ledgers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from rewardloop.learning.rewards.fusion import FusionState

if TYPE_CHECKING:  # attributes only: importing it here would be a cycle (surface -> rewards -> ledger)
    from rewardloop.learning.surface import SurfaceConfig


@dataclass
class ItemReward:
    """The reward of one decision-item so far, and where the policy learned it."""

    fusion: FusionState
    arm: int
    features: bytes
    propensity: float
    segment: str
    # The policy state's n_updates just before it learned this item; None: not learned yet.
    step: int | None = None

    def context(self) -> npt.NDArray[np.float64] | None:
        return np.frombuffer(self.features, dtype="<f8") if self.features else None

    @property
    def decided_at_ms(self) -> int:
        return self.fusion.decided_at_ms or 0

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.arm, "x": self.features.hex(), "p": self.propensity, "sg": self.segment, "n": self.step,
            "f": self.fusion.to_dict(),
        }  # fmt: skip

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], surface: SurfaceConfig) -> ItemReward:
        fusion = FusionState.from_dict(raw["f"], surface.reward)
        return cls(fusion, int(raw["a"]), bytes.fromhex(raw["x"]), float(raw["p"]), str(raw["sg"]), raw["n"])

    def mark(self) -> tuple[int, int | None]:
        """Changes with every change to the entry (a new event, its first learning)."""
        return len(self.fusion), self.step


@dataclass(frozen=True)
class Settled:
    """A learned ledger entry as a snapshot stores it in Redis, out of the user's memory (``settle``)."""

    surface: str
    key: str  # decision-item
    item: ItemReward
    mark: tuple[int, int | None]


def item_key(decision_id: str, item_id: str) -> str:
    """The key of a decision-item in a ledger (and in the stored entries' fields, ``state/settled.py``)."""
    return f"{decision_id}/{item_id}"
