"""Simulated users for demos, benchmarks and learning tests (pure numpy; no service code).

>>> from rewardloop.simulator import Population
>>> pop = Population(n_users=10, n_items=20, seed=3)
>>> pop.user_ids[:2]
('sim-u0000', 'sim-u0001')
>>> list(pop.user_feature_dict(0)), pop.context_names
(['u0', 'u1', 'u2', 'u3', 'u4', 'u5'], ('c0', 'c1'))
"""

from rewardloop.simulator.population import Population, Response

__all__ = ["Population", "Response"]
