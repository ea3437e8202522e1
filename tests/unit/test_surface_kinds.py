"""Every configurable surface kind has a decider in the shard, and nothing else does."""

from __future__ import annotations

from rewardloop.learning.surface import SURFACE_KINDS
from rewardloop.workers.kinds import KINDS


def test_every_surface_kind_has_exactly_one_decider() -> None:
    assert set(KINDS) == set(SURFACE_KINDS)
