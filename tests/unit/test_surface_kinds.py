"""Every configurable surface kind has a decider in the shard, and nothing else does."""

from __future__ import annotations

from rewardloop.learning.surface import SURFACE_KINDS
from rewardloop.workers.kinds import KINDS


def test_every_surface_kind_has_exactly_one_decider() -> None:
    # Agent surfaces hold sessions and a policy source: the shard builds them (workers/agents.py).
    assert set(KINDS) | {"agent"} == set(SURFACE_KINDS)
    assert "agent" not in KINDS


def test_an_agent_surface_without_an_agent_table_takes_the_defaults() -> None:
    from rewardloop.learning.surface import surface_from_dict

    surface = surface_from_dict("a", {"kind": "agent", "items": ["x", "y"], "features": {"numeric": ["f"]}})
    assert surface.spec.algorithm == "dqn" and surface.spec.replicas == 1
    # request features (bias + f), then turn, satisfaction, since_positive and a share per action
    assert surface.spec.dqn_config(surface.context_dim, len(surface.items)).observation_size == 2 + 3 + 2
