"""Logged bandit data of one surface, as off-policy evaluation reads it (pure; ``rewardloop.state.logged_decisions``
reads it out of Redis)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class LoggedDecisions:
    """Decisions of one surface, oldest first."""

    contexts: npt.NDArray[np.float64]  # (N, d); a bias column only for context-free surfaces
    actions: npt.NDArray[np.intp]  # (N,) arm index of the first slot
    propensities: npt.NDArray[np.float64]  # (N,)
    rewards: npt.NDArray[np.float64]  # (N,)
    decided_at_ms: npt.NDArray[np.int64]  # (N,)

    def __len__(self) -> int:
        return len(self.actions)

    def split(self, at: int) -> tuple[LoggedDecisions, LoggedDecisions]:
        def part(s: slice) -> LoggedDecisions:
            return LoggedDecisions(
                self.contexts[s], self.actions[s], self.propensities[s], self.rewards[s], self.decided_at_ms[s]
            )

        return part(slice(0, at)), part(slice(at, None))
