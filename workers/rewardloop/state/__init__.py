"""Durable state in Redis: key schema, one record type per log and its codec, the store, snapshots,
user state, population priors. Imports ``rewardloop.learning``; never Ray or gRPC."""
