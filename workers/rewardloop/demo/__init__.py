"""Drives a running service with simulated users through the SDK: `python -m rewardloop.demo`,
the learning scenarios the acceptance tests and `bench/learning.py` share."""
