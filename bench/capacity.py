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
- stored ledger entries are written at the first snapshot after the decision's window closed: the
  clicked item's own field, and one field for the defaults the close taught; they are pruned by
  their decision's time.

Bytes per key and per entry (``entry_bytes``) were measured in a soak, by family; shard bytes per user, ledger
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
from rewardloop.state.user_state import DEFAULT_ENTRY_BYTES, LEDGER_ENTRY_BYTES, USER_BYTES
from rewardloop.workers.config import ServiceConfig
from rewardloop.workers.decisions import CLOSE_SLACK_MS, DECISION_BYTES
from rewardloop.workers.shard import IDLE_SWEEP_SECONDS
from rewardloop.workers.write_behind import IDLE_SNAPSHOT_SECONDS


def entry_bytes(slate: int) -> dict[str, tuple[float, float]]:
    """Redis bytes of each family as (per key, per entry): a least-squares line through MEMORY USAGE
    against entries (XLEN, HLEN) of an eighth of each family's keys, in a soak at steady state
    (2026-11-27, bench/soak.toml, 140 pairs/s, 5,000 users, S = 10, 3 surfaces; entries per key from
    1 to 55). A stream's key costs KB whatever it holds (trimmed entries stay in its nodes until a
    whole node is empty), which bench/footprint.py's one user with 20 interactions does not show;
    a per-entry cost alone (measured at 102 pairs/s) over-predicted a soak at 140 by 26%. Entries
    that list the slate scale with it."""
    scale = (310 + 30 * (slate - 1)) / (310 + 30 * 9)
    return {
        "feedback log (Record)": (5_407, 255),  # per key: the log's, shared by both kinds of entry
        "feedback log (window close)": (0, 255 * scale),
        "decision log": (2_754, 454 * scale),
        "join index": (86, 337 * (200 + 14 * slate) / (200 + 14 * 10)),
        "event ids": (69, 52),
        "stored entries (clicked)": (123, 123),  # per key: the hash's, shared by both kinds of field
        "stored entries (defaults)": (0, 123 * (60 + 7 * (slate - 1)) / (60 + 7 * 9)),
        "snapshot": (1_630, 0),
        "open windows": (0, 160),
    }


@dataclass
class Hash:
    """A per-user hash pruned by time once it doubles (retention.py): entry times, and the size to prune at."""

    horizon: float
    times: list[float] = field(default_factory=list)
    prune_at: int = 0

    def add(self, t: float, n: int = 1, at: float | None = None) -> None:
        """``n`` entries dated ``at`` (default: ``t``, now) added at ``t``."""
        self.times.extend([t if at is None else at] * n)
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
    # Decision times of the windows closed since the last snapshot: their entries are in memory.
    settling: list[float] = field(default_factory=list)
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
        self.peak: dict[str, float] = {}

    def run(self, minutes: float, pairs: float | None = None) -> dict[str, float]:
        """Go on for ``minutes`` (at ``pairs`` per second from now on, if given); the mean entries per
        family over the last third of them (sampled every 10 s). ``peak`` keeps the sample, from the
        start of the simulation on, whose shard memory (``shard_bytes``) was highest."""
        if pairs is not None:
            self.rate = pairs / len(self.users)
        start, end = self.now, self.now + minutes * 60
        last_third = start + (end - start) * 2 / 3
        sample = min(start + 10, last_third)
        samples: list[dict[str, float]] = []
        while self.events and self.events[0][0] <= end:
            now, _, kind, u = heapq.heappop(self.events)
            while self._sweep <= now:
                self._snapshot_idle(self._sweep)
                self._sweep += IDLE_SWEEP_SECONDS
            while sample <= now:
                counted = self._count(sample)
                if sum(shard_bytes(counted, len(self.users)).values()) > sum(
                    shard_bytes(self.peak, len(self.users)).values()
                ):
                    self.peak = counted
                if sample >= last_third:
                    samples.append(counted)
                sample += 10
            self._happen(now, kind, u)
        self.now = end
        samples = samples or [self._count(end)]  # a run shorter than the sampling step
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
            self._push(now + self.window, "close", u)
            self._push(now + self.rng.expovariate(self.rate), "decide", u)
        else:  # the window closes: one entry for the items nobody acted on
            user.open_windows -= 1
            user.closes.append(now)
            self.ids[u].add(now)
            # Its clicked item's entry and the defaults' are stored (settled) at the next snapshot.
            user.settling.append(now - self.window)
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
        for decided in user.settling:  # the clicked item's field and the defaults'
            self.stored[u].add(now, 2, at=decided)
        user.settling = []
        user.records = [x for x in user.records if x >= now - self.logs]
        user.closes = [x for x in user.closes if x >= now - self.logs]
        user.decisions = [x for x in user.decisions if x >= now - self.logs]
        user.since_snapshot, user.learned_at = 0, -1.0
        user.log_expires = max(user.records + user.closes, default=now) + self.logs

    def _keys(self, now: float) -> dict[str, float]:
        """Keys of each Redis family (``entry_bytes``'s), as ``_count`` counts entries."""
        alive = [p for p in self.users if p.log_expires >= now]
        return {
            "feedback log (Record)": sum(1 for p in alive if p.records or p.closes),
            "decision log": sum(1 for p in self.users if p.decisions),
            "join index": sum(1 for h in self.joins if h.times),
            "event ids": sum(1 for h in self.ids if h.times),
            "stored entries (clicked)": sum(1 for h in self.stored if h.times),
            "snapshot": len(self.users),
        }

    def _count(self, now: float) -> dict[str, float]:
        alive = [p for p in self.users if p.log_expires >= now]
        stored = sum(len(h.times) + 1 for h in self.stored)
        opened = self.rate * len(self.users) * self.window
        return {
            **{f"keys: {family}": n for family, n in self._keys(now).items()},
            "feedback log (Record)": sum(len(p.records) for p in alive),
            "feedback log (window close)": sum(len(p.closes) for p in alive),
            "decision log": sum(len(p.decisions) for p in self.users),
            "join index": sum(len(h.times) + 1 for h in self.joins),
            "event ids": sum(len(h.times) + 1 for h in self.ids),
            # One field per decision for its click, one for its defaults.
            "stored entries (clicked)": stored / 2,
            "stored entries (defaults)": stored / 2,
            "snapshot": 0,  # one per user, counted as a key
            "open windows": opened,
            # In the shards' memory: ledger entries not settled yet (an entry stays until the first
            # snapshot after its window closed). The clicked item's entry (with its event) exists from
            # the Record on; the other items' (without events) from the window's close.
            "memory: clicked entries": sum(p.open_windows + len(p.settling) for p in self.users),
            "memory: default entries": sum((self.slate - 1) * len(p.settling) for p in self.users),
            # Kept a reward window and CLOSE_SLACK_MS after they are made (decisions.py).
            "memory: recent decisions": self.rate * len(self.users) * (self.window + CLOSE_SLACK_MS / 1000),
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
    """A title, a line per part and their total, in MB (2^20 bytes, as the soak reports)."""
    rows = [*sizes.items(), ("total", sum(sizes.values()))]
    return [title, *(f"  {name:30s} {size / 2**20:8.1f} MB" for name, size in rows)]


def predict(
    config: ServiceConfig,
    users: int,
    pairs: float,
    minutes: float = 30,
    slate: int = 10,
    before: tuple[float, float] | None = None,
) -> Prediction:
    """Redis and shard bytes: the simulated entries times their measured bytes. ``before``: (minutes,
    pairs per second) the same users sent first (a soak's calibration).

    Redis: the mean over the last third of the run (Redis gives freed memory back). Shards: their
    peak since the start (``before`` included), since a Python process keeps the memory it freed
    for reuse and its RSS stays at its high-water mark: in a soak's warm-up, before snapshots settle
    the first ledger entries, the shards held 1.2x what they held later, and RSS stayed there."""
    simulation = Simulation(config, users, before[1] if before else pairs, slate)
    if before:
        simulation.run(before[0])
    entries = simulation.run(minutes, pairs)
    sizes = entry_bytes(slate)
    return Prediction(
        redis={
            family: entries.get(f"keys: {family}", 0) * per_key + entries[family] * per_entry
            for family, (per_key, per_entry) in sizes.items()
        },
        shards=shard_bytes(simulation.peak, users),
    )


def shard_bytes(entries: dict[str, float], users: int) -> dict[str, float]:
    """The shards' memory for the simulated entries (``Simulation._count``'s; none: users alone),
    with the constants of their own accounting (``UserState.footprint``)."""
    return {
        "users": users * USER_BYTES,
        "ledger entries (clicked)": entries.get("memory: clicked entries", 0) * LEDGER_ENTRY_BYTES,
        "ledger entries (defaults)": entries.get("memory: default entries", 0) * DEFAULT_ENTRY_BYTES,
        "recent decisions": entries.get("memory: recent decisions", 0) * DECISION_BYTES,
    }


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
