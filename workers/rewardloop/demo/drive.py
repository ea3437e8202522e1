"""Drive a running rewardloop service with a simulated population, through the SDK.

Each round, every user (concurrently, up to `concurrency` in flight) asks for one
recommendation, reacts to it as the population's model says, and reports a click (1 or
0) for the item it was shown. The same users' uniform-random baseline is simulated
with the same response model, so both CTRs are comparable.

    python -m rewardloop.demo.drive --target localhost:50051 --surface home_feed
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from rewardloop.client import AsyncClient, FeedbackEvent, Signal
from rewardloop.simulator.population import Population, Response

# What a producer reports about one shown item: (signal, value) pairs.
Report = Callable[[Response], list[tuple[Signal, float]]]


def click_only(response: Response) -> list[tuple[Signal, float]]:
    """The true reward: clicked (1) or not (0)."""
    return [(Signal.CLICK, 1.0 if response.clicked else 0.0)]


def implicit_signals(response: Response) -> list[tuple[Signal, float]]:
    """What a feed sees without asking: an impression, then click, dwell and like, or a skip."""
    if not response.clicked:
        return [(Signal.IMPRESSION, 1.0), (Signal.SKIP, 1.0)]
    events = [(Signal.IMPRESSION, 1.0), (Signal.CLICK, 1.0), (Signal.DWELL, round(response.dwell_seconds, 3))]
    return [*events, (Signal.LIKE, 1.0)] if response.liked else events


@dataclass
class RunResult:
    """Per-round sums over users: realised clicks, and the click probabilities of the items
    shown, of the best item (oracle) and of a uniformly random one, for the same requests.
    The expected CTRs are the steadier measure; the realised one is what users did."""

    users: int
    clicks_per_round: list[int] = field(default_factory=list)
    expected_per_round: list[float] = field(default_factory=list)
    oracle_per_round: list[float] = field(default_factory=list)
    random_per_round: list[float] = field(default_factory=list)
    # Per round, the item index each user (in `users` order) was shown first.
    shown_per_round: list[list[int]] = field(default_factory=list)
    # Per round, every item's click probability summed over the users (under their contexts).
    items_per_round: list[list[float]] = field(default_factory=list)
    acknowledged_events: int = 0

    def followed_by(self, later: RunResult) -> RunResult:
        """This run's rounds, then ``later``'s (the same users continuing, e.g. after a taste shift).

        >>> first = RunResult(users=2, expected_per_round=[0.2], random_per_round=[0.2])
        >>> both = first.followed_by(RunResult(users=2, expected_per_round=[1.0], random_per_round=[0.2]))
        >>> both.expected_ctr(), both.expected_ctr(1), round(both.random_ctr(), 3)
        (0.3, 0.5, 0.1)
        >>> first.followed_by(RunResult(users=3))
        Traceback (most recent call last):
        ValueError: followed_by needs the same users, got 2 and 3
        """
        if later.users != self.users:
            raise ValueError(f"followed_by needs the same users, got {self.users} and {later.users}")
        return RunResult(
            users=self.users,
            clicks_per_round=self.clicks_per_round + later.clicks_per_round,
            expected_per_round=self.expected_per_round + later.expected_per_round,
            oracle_per_round=self.oracle_per_round + later.oracle_per_round,
            random_per_round=self.random_per_round + later.random_per_round,
            shown_per_round=self.shown_per_round + later.shown_per_round,
            items_per_round=self.items_per_round + later.items_per_round,
            acknowledged_events=self.acknowledged_events + later.acknowledged_events,
        )

    def _mean(self, per_round: list[float] | list[int], first_round: int, last_round: int | None) -> float:
        rounds = per_round[first_round:last_round]
        return sum(rounds) / (len(rounds) * self.users) if rounds else 0.0

    def ctr(self, first_round: int = 0, last_round: int | None = None) -> float:
        return self._mean(self.clicks_per_round, first_round, last_round)

    def expected_ctr(self, first_round: int = 0, last_round: int | None = None) -> float:
        return self._mean(self.expected_per_round, first_round, last_round)

    def oracle_ctr(self, first_round: int = 0, last_round: int | None = None) -> float:
        return self._mean(self.oracle_per_round, first_round, last_round)

    def random_ctr(self, first_round: int = 0, last_round: int | None = None) -> float:
        return self._mean(self.random_per_round, first_round, last_round)

    def best_item_ctr(self, first_round: int = 0, last_round: int | None = None) -> float:
        """Expected CTR of the one item that would have done best, served to everyone at those rounds
        (under the same contexts and, after a taste shift, the same tastes)."""
        if not self.items_per_round[first_round:last_round]:
            return 0.0
        return self.item_ctr(self.best_item(first_round, last_round), first_round, last_round)

    def best_item(self, first_round: int = 0, last_round: int | None = None) -> int:
        """The item ``best_item_ctr`` serves: the best over those rounds of these users."""
        return int(np.argmax(np.sum(self.items_per_round[first_round:last_round], axis=0)))

    def item_ctr(self, item: int, first_round: int = 0, last_round: int | None = None) -> float:
        """Expected CTR of ``item`` served to every user at those rounds (under the same contexts).

        >>> run = RunResult(users=2, items_per_round=[[0.2, 1.0], [0.4, 0.0]])
        >>> run.best_item(), run.item_ctr(1), run.best_item_ctr(), run.item_ctr(0, first_round=1)
        (1, 0.25, 0.25, 0.2)
        """
        rounds = self.items_per_round[first_round:last_round]
        return sum(r[item] for r in rounds) / (len(rounds) * self.users) if rounds else 0.0


def random_policy_ctr(population: Population, users: list[int], rounds: int, seed: int) -> float:
    """CTR of uniform-random recommendations to the same users under the same model."""
    rng = np.random.default_rng(seed)
    clicks = 0
    for _ in range(rounds):
        for u in users:
            item = int(rng.integers(population.n_items))
            clicks += population.respond(u, item, rng).clicked
    return clicks / (rounds * len(users))


async def run_population(
    client: AsyncClient,
    population: Population,
    surface: str,
    rounds: int,
    *,
    users: list[int] | None = None,
    seed: int = 0,
    concurrency: int = 32,
    user_prefix: str = "",
    contextual: bool = False,
    first_round: int = 0,
    on_round: Callable[[int, RunResult], None] | None = None,
    between_rounds: Callable[[], Awaitable[None]] | None = None,
    report: Report = click_only,
) -> RunResult:
    """Run `rounds` decision rounds for `users` (default: everyone) against `surface`.

    Rounds are numbered from `first_round` (event ids derive from them, so a run that
    continues another -- e.g. after a taste shift -- passes where the first stopped).
    With `contextual`, each request carries the user's observable features and a fresh
    request context (drawn from its own stream, so responses stay comparable with a
    context-free run), and the user reacts under that context. `report` turns the user's
    reaction into the feedback events sent (one RecordBatch per decision).
    """
    users = list(range(population.n_users)) if users is None else users
    result = RunResult(users=len(users))
    rngs = {u: np.random.default_rng([seed, u]) for u in users}
    context_rngs = {u: np.random.default_rng([seed, u, 1]) for u in users}
    gate = asyncio.Semaphore(concurrency)

    async def one_decision(u: int, round_: int) -> tuple[int, float, float, float, int, NDArray[np.float64]]:
        user_id = f"{user_prefix}{population.user_ids[u]}"
        ctx = population.draw_context(u, context_rngs[u]) if contextual else None
        features = {**population.user_feature_dict(u), **population.context_dict(ctx)} if ctx is not None else None
        probabilities = population.click_probabilities(u, ctx)
        async with gate:
            rec = await client.recommend(user_id, surface, context=features)
            item_id = rec.items[0].item_id
            item = population.item_index(item_id)
            response = population.respond(u, item, rngs[u], ctx)
            events = report(response)
            if len(events) == 1:
                [(signal, value)] = events
                await client.record(
                    user_id, item_id, signal, value, decision_id=rec.decision_id, surface=surface,
                    event_id=f"{user_id}:{surface}:{round_}",
                )  # fmt: skip
            else:
                await client.record_batch(
                    [
                        FeedbackEvent(user_id, item_id, signal, value, decision_id=rec.decision_id, surface=surface,
                                      event_id=f"{user_id}:{surface}:{round_}:{signal.name}")
                        for signal, value in events
                    ]
                )  # fmt: skip
        return (
            int(response.clicked),
            float(probabilities[item]),
            float(probabilities.max()),
            float(probabilities.mean()),
            item,
            probabilities,
        )

    for round_ in range(first_round, first_round + rounds):
        outcomes = await asyncio.gather(*(one_decision(u, round_) for u in users))
        clicks, expected, oracle, random, shown, items = zip(*outcomes, strict=True)
        result.clicks_per_round.append(sum(clicks))
        result.expected_per_round.append(sum(expected))
        result.oracle_per_round.append(sum(oracle))
        result.random_per_round.append(sum(random))
        result.shown_per_round.append(list(shown))
        result.items_per_round.append(np.sum(items, axis=0).tolist())
        result.acknowledged_events += len(users)
        if on_round is not None:
            on_round(round_ - first_round, result)
        if between_rounds is not None:
            await between_rounds()
    return result
