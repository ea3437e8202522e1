"""Agent policies that learn across a session: tabular Q-learning, DQN and Double DQN (pure: no Ray, no Redis)."""
