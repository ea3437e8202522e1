"""The writer behind the shard lingers so decisions share a Redis round trip, and lingers for
nobody who waits on it (workers/write_behind.py). A recording store stands in for Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from rewardloop.state.records import DecisionRecord
from rewardloop.state.store import Snapshot
from rewardloop.workers import write_behind
from rewardloop.workers.write_behind import WriteBehind


class RecordingStore:
    def __init__(self) -> None:
        self.writes: list[tuple[list[str], list[str]]] = []

    async def write_back(
        self, decisions: Sequence[DecisionRecord], snapshots: Mapping[str, Snapshot], windows_key: str = ""
    ) -> None:
        self.writes.append(([d.decision_id for d in decisions], sorted(snapshots)))


def _decision(k: int) -> DecisionRecord:
    return DecisionRecord("p", f"d{k}", "s", ("a",), (1.0,), "ucb1", "v", 1_000 + k)


def _writer(store: RecordingStore) -> WriteBehind:
    return WriteBehind(store, "windows", 0, lambda state: b"", {})  # type: ignore[arg-type]


async def test_decisions_queued_while_it_lingers_share_one_write() -> None:
    store = RecordingStore()
    behind = _writer(store)
    for k in range(5):
        behind.decision(_decision(k))
        await asyncio.sleep(0)  # the writer has started and lingers
    await behind.drain()
    assert store.writes == [([f"d{k}" for k in range(5)], [])]


async def test_a_drain_and_a_load_waiting_for_a_snapshot_do_not_wait_out_the_linger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(write_behind, "LINGER_SECONDS", 3_600.0)
    store = RecordingStore()
    behind = _writer(store)
    behind.decision(_decision(0))
    await asyncio.wait_for(behind.drain(), timeout=30)  # a hang guard, not a timing
    assert store.writes == [(["d0"], [])]
    behind._pending_snapshots["u"] = Snapshot(b"blob", "1-0")
    behind.schedule()
    await asyncio.sleep(0)  # lingering
    await asyncio.wait_for(behind.written("u"), timeout=30)
    assert store.writes[-1] == ([], ["u"])
