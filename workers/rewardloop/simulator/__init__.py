"""Simulated users for demos, benchmarks and learning tests (pure numpy; no service code).

>>> from rewardloop.simulator import Population
>>> Population(n_users=10, n_items=20, seed=3).user_ids[:2]
('sim-u0000', 'sim-u0001')
"""

from rewardloop.simulator.population import Population, Response

__all__ = ["Population", "Response"]
