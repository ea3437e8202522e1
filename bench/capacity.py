"""The capacity model as a calculator: Redis memory by key family for N users sending R
Recommend+Record pairs per second, under a service configuration.

At horizons of days the README's closed form holds (every family is its rate times its horizon).
At short horizons, or for users who come rarely, per-user floors dominate and the closed form
misses them (the soak's horizons are minutes: it measured twice the closed form). So this
simulates, per user, the rules that decide what Redis keeps, event by event:

- a user's decision comes as a Poisson process of rate R/N (the soak picks users uniformly), with
  one Record right after it and, a reward window later, the decision's window-close entry;
- the feedback and decision logs are trimmed only when a snapshot is written: every
  ``snapshot_every`` log entries, or once the user has learned nothing for a minute (looked for
  every 5 s); then entries older than ``logs_seconds`` go; a log a snapshot covers whole expires
  ``logs_seconds`` after its last entry;
- the per-user hashes (event ids, join index, stored ledger entries) are pruned by their
  horizons once they have doubled since their last prune, and not below 32 entries (retention.py);
- stored ledger entries are written at the first snapshot after an item was learned: the clicked
  item's own field, and one field for the defaults a window close taught.

Bytes per entry (``entry_bytes``) were measured in a soak, by family; shard bytes per user, ledger
entry and remembered decision are the constants the shards' own budget accounting uses
(``state/user_state.py``, measured with tracemalloc by ``bench/footprint.py``). ``bench/soak.py``
prints this prediction next to what it measured, as a verdict line (issue 10: within 20%).

    .venv/bin/python bench/capacity.py --config bench/soak.toml --users 5000 --pairs 102
"""

from __future__ import annotations

import argparse
import heapq
import random
from dataclasses import dataclass, field

from rewardloop.learning.surface import longest_window_ms
from rewardloop.state.retention import PRUNE_FLOOR
from rewardloop.state.user_state import LEDGER_ENTRY_BYTES, USER_BYTES
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.decisions import DECISION_BYTES
from rewardloop.workers.shard import IDLE_SWEEP_SECONDS
from rewardloop.workers.write_behind import IDLE_SNAPSHOT_SECONDS


def entry_bytes(slate: int) -> dict[str, float]:
    """Redis bytes per entry of each family, its key's overhead included, at the lengths a soak's keys
    have (10-30 entries): MEMORY USAGE over a tenth of each family's keys divided by their entries, in
    the soak of 2026-11-27 (bench/soak.toml, S = 10, 3 surfaces). A small stream costs several KB
    whatever it holds (a decision log of 9 entries: 813 B an entry), which bench/footprint.py's one
    user with 20 interactions does not show. Entries that list the slate scale with it."""
    scale = (310 + 30 * (slate - 1)) / (310 + 30 * 9)
    return {
        "feedback log (Record)": 617,
        "feedback log (window close)": 617 * scale,
        "decision log": 813,
        "join index": 200 + 14 * slate,
        "event ids": 54,
        "stored entries (clicked)": 127,
        "stored entries (defaults)": 127 * (60 + 7 * (slate - 1)) / (60 + 7 * 9),
        "snapshot": 1_579,
        "open windows": 160,
    }


@dataclass
class Hash:
    """A per-user hash pruned by time once it doubles (retention.py): entry times, and the size to prune at."""

    horizon: float
    times: list[float] = field(default_factory=list)
    prune_at: int = 0

    def add(self, t: float, n: int = 1) -> None:
        self.times.extend([t] * n)
        size = len(self.times) + 1  # the "" field that keeps prune_at
        if size >= max(self.prune_at, PRUNE_FLOOR):
            self.times = [x for x in self.times if x >= t - self.horizon]
            self.prune_at = 2 * (len(self.times) + 1)


@dataclass
class User:
    records: list[float] = field(default_factory=list)  # feedback-log entries, by time
    closes: list[float] = field(default_factory=list)
    decisions: list[float] = field(default_factory=list)
    since_snapshot: int = 0
    learned_at: float = -1.0  # -1: nothing learned since the last snapshot
    log_expires: float = float("inf")
    clicked_unsettled: int = 0
    defaults_unsettled: int = 0
    open_windows: int = 0


class Simulation:
    """Users' decisions, Records and window closes, and what Redis keeps of them (module docstring)."""

    def __init__(self, config: ServiceConfig, users: int, pairs: float, slate: int, seed: int = 0) -> None:
        self.config, self.slate = config, slate
        self.rng = random.Random(seed)
        self.window = longest_window_ms(config.surfaces.values()) / 1000
        self.logs = config.retention.logs_seconds
        self.rate = pairs / users
        self.users = [User() for _ in range(users)]
        self.ids = [Hash(config.retention.dedup_seconds) for _ in range(users)]
        self.joins = [Hash(config.join_ms / 1000) for _ in range(users)]
        self.stored = [Hash(config.settled_ms / 1000) for _ in range(users)]
        self.events: list[tuple[float, int, str, int]] = []  # (time, order, kind, user)
        self.order = 0
        for u in range(users):
            self._push(self.rng.expovariate(self.rate), "decide", u)

        self.now, self._sweep = 0.0, IDLE_SWEEP_SECONDS

    def run(self, minutes: float, pairs: float | None = None) -> dict[str, float]:
        """Go on for ``minutes`` (at ``pairs`` per second from now on, if given); the mean entries per
        family over the last third of them (sampled every 10 s)."""
        if pairs is not None:
            self.rate = pairs / len(self.users)
        start, end = self.now, self.now + minutes * 60
        sample = start + (end - start) * 2 / 3
        samples: list[dict[str, float]] = []
        while self.events and self.events[0][0] <= end:
            now, _, kind, u = heapq.heappop(self.events)
            while self._sweep <= now:
                self._snapshot_idle(self._sweep)
                self._sweep += IDLE_SWEEP_SECONDS
            while sample <= now:
                samples.append(self._count(sample))
                sample += 10
            self._happen(now, kind, u)
        self.now = end
        return {k: sum(s[k] for s in samples) / len(samples) for k in samples[0]}

    def _push(self, at: float, kind: str, u: int) -> None:
        heapq.heappush(self.events, (at, self.order, kind, u))
        self.order += 1

    def _happen(self, now: float, kind: str, u: int) -> None:
        user = self.users[u]
        if user.log_expires < now:
            user.records, user.closes = [], []
            user.log_expires = float("inf")
        if kind == "decide":  # the decision, and the Record right after it
            user.open_windows += 1
            user.decisions.append(now)
            self.joins[u].add(now)
            user.records.append(now)
            self.ids[u].add(now)
            user.clicked_unsettled += 1
            self._push(now + self.window, "close", u)
            self._push(now + self.rng.expovariate(self.rate), "decide", u)
        else:  # the window closes: one entry for the items nobody acted on
            user.open_windows -= 1
            user.closes.append(now)
            self.ids[u].add(now)
            user.defaults_unsettled += 1
        user.since_snapshot += 1
        user.learned_at = now
        user.log_expires = float("inf")
        if user.since_snapshot >= self.config.snapshot_every:
            self._snapshot(u, now)

    def _snapshot_idle(self, now: float) -> None:
        for u, user in enumerate(self.users):
            if user.learned_at >= 0 and now - user.learned_at >= IDLE_SNAPSHOT_SECONDS:
                self._snapshot(u, now)

    def _snapshot(self, u: int, now: float) -> None:
        user = self.users[u]
        if user.clicked_unsettled or user.defaults_unsettled:
            self.stored[u].add(now, user.clicked_unsettled + user.defaults_unsettled)
            user.clicked_unsettled = user.defaults_unsettled = 0
        user.records = [x for x in user.records if x >= now - self.logs]
        user.closes = [x for x in user.closes if x >= now - self.logs]
        user.decisions = [x for x in user.decisions if x >= now - self.logs]
        user.since_snapshot, user.learned_at = 0, -1.0
        user.log_expires = max(user.records + user.closes, default=now) + self.logs

    def _count(self, now: float) -> dict[str, float]:
        alive = [p for p in self.users if p.log_expires >= now]
        stored = sum(len(h.times) + 1 for h in self.stored)
        opened = self.rate * len(self.users) * self.window
        return {
            "feedback log (Record)": sum(len(p.records) for p in alive),
            "feedback log (window close)": sum(len(p.closes) for p in alive),
            "decision log": sum(len(p.decisions) for p in self.users),
            "join index": sum(len(h.times) + 1 for h in self.joins),
            "event ids": sum(len(h.times) + 1 for h in self.ids),
            # One field per decision for its click, one for its defaults.
            "stored entries (clicked)": stored / 2,
            "stored entries (defaults)": stored / 2,
            "snapshot": len(self.users),
            "open windows": opened,
            # In the shards' memory: ledger entries not settled yet (an item stays until a snapshot
            # after it was learned; a decision's defaults are learned when its window closes).
            "memory: ledger entries": sum(
                p.clicked_unsettled + (self.slate - 1) * (p.open_windows + p.defaults_unsettled) for p in self.users
            ),
            "memory: recent decisions": opened,
        }


@dataclass(frozen=True)
class Prediction:
    redis: dict[str, float]  # bytes by key family
    shards: dict[str, float]  # bytes in the shards' memory, all shards together

    def show(self) -> str:
        redis = dict(sorted(self.redis.items(), key=lambda kv: -kv[1]))
        return "\n".join(
            [
                *_block("Redis", redis),
                *_block("shard memory (all shards, above each process's empty size)", self.shards),
            ]
        )


def _block(title: str, sizes: dict[str, float]) -> list[str]:
    """A title, a line per part and their total, in MB."""
    rows = [*sizes.items(), ("total", sum(sizes.values()))]
    return [title, *(f"  {name:30s} {size / 1e6:8.1f} MB" for name, size in rows)]


def predict(
    config: ServiceConfig,
    users: int,
    pairs: float,
    minutes: float = 30,
    slate: int = 10,
    before: tuple[float, float] | None = None,
) -> Prediction:
    """Redis and shard bytes: the simulated entries times their measured bytes. ``before``: (minutes,
    pairs per second) the same users sent first (a soak's calibration)."""
    simulation = Simulation(config, users, before[1] if before else pairs, slate)
    if before:
        simulation.run(before[0])
    entries = simulation.run(minutes, pairs)
    sizes = entry_bytes(slate)
    return Prediction(
        redis={family: entries[family] * size for family, size in sizes.items()},
        shards={
            "users": users * USER_BYTES,
            "ledger entries": entries["memory: ledger entries"] * LEDGER_ENTRY_BYTES,
            "recent decisions": entries["memory: recent decisions"] * DECISION_BYTES,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="service TOML (default: the server's default)")
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--pairs", type=float, default=108, help="Recommend+Record pairs per second")
    parser.add_argument("--minutes", type=float, default=30, help="simulated minutes (the last third is averaged)")
    parser.add_argument("--slate", type=int, default=10)
    args = parser.parse_args()
    config = ServiceConfig.load(args.config)
    print(predict(config, args.users, args.pairs, args.minutes, args.slate).show())


if __name__ == "__main__":
    main()
