"""Keeping CPython's cyclic garbage collector off the serving path's tail latency.

A full (generation-2) collection stops the process for as long as it takes to traverse every
object the collector tracks, and CPython 3.11 runs one each time the objects promoted to the old
generation since the last one reach a quarter of those that survived it. Measured in the soak
(bench/soak.py, 215 RPC/s, 2,500 users per shard): each shard tracked 190k-430k objects (~100k
from its imports; per user its states, ledger entries and activity) and stopped 270-580 ms in each
full collection, one every 25-40 s, collecting nothing; the front tracked 125k objects (its
imports), 100-170 ms a collection. Every request that arrived meanwhile waited: the soak's p99
spikes of 0.4-1.2 s.

So the serving processes (never a test process or a library caller) freeze (``gc.freeze``) what
they hold out of the collector, as large Python services do:

- at start-up, collect and freeze what exists: modules, classes, functions, the configuration;
- a shard, every ``FREEZE_SECONDS``, collects what is not frozen (what survived since the last
  time) and freezes the survivors. The front freezes once: it holds nothing per user.

A freeze's collection holds the GIL for as long as it traverses what survived since the last one,
so its period sets the pause, not the work: at 5 s a shard serving 92 pairs/s spent ~30 ms of CPU
in each (py-spy, bench/soak.py at 370 RPC/s) and its longest collection per minute was 62-126 ms
in the 30-minute soak; every second the same work comes in five slices: 19-50 ms (bench/README.md).

A collection then traverses only what survived since the last freeze, whatever the users held: the
longest collection per minute was 13-58 ms in 5-minute soaks, at most 123 ms over the 30-minute
one (bench/README.md). Frozen objects are still freed
by reference counting (an evicted user, a settled ledger entry); what freezing gives up is a
reference *cycle* among frozen objects that becomes garbage later, which no collection sees.
So what a shard drops must be acyclic: ``tests/integration/test_heap.py`` drives a shard through
evictions, reloads, window closes and snapshots with the collector off and finds none of our
objects in cycles (it found users held by redis-py's failed connection handshakes: ``Store``).
Measured after 3 minutes of the soak, unfreezing and collecting everything found 10 objects (an
import's metadata) in each shard.

``rewardloop_gc_pause_max_seconds`` is each process's longest collection of the last
``PAUSE_WINDOW_SECONDS``, ``rewardloop_gc_collections`` counts them by generation and
``rewardloop_gc_freezes`` the freezes. Not the frozen objects: ``gc.get_freeze_count`` walks them
all (77 ms for 400k objects, measured with py-spy in a shard), which is itself a pause.
"""

from __future__ import annotations

import collections
import gc
import threading
import time
from typing import Any

FREEZE_SECONDS = 1.0
PAUSE_WINDOW_SECONDS = 60.0
# Pauses shorter than this are not kept for the maximum (young collections, ~0.1 ms, thousands a minute).
PAUSE_FLOOR_SECONDS = 0.001
_MAX_PAUSES = 4096


class Heap:
    """Times every collection (``gc.callbacks``) and, once ``start``-ed, freezes the survivors."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.freezes = 0
        self._started_at = 0.0
        self._pauses: collections.deque[tuple[float, float]] = collections.deque(maxlen=_MAX_PAUSES)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        gc.callbacks.append(self._observe)

    def start(self, every: float | None = None) -> None:
        """Freeze what exists now; with ``every``, the survivors every ``every`` seconds too (a daemon thread)."""
        self.freeze()
        if every is None:
            return
        self._thread = threading.Thread(target=self._freeze_forever, args=(every,), name="heap-freeze", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        gc.callbacks.remove(self._observe)

    def freeze(self) -> None:
        """Collect what is not frozen, then freeze the survivors."""
        gc.collect()
        gc.freeze()
        self.freezes += 1

    def stats(self) -> dict[str, float]:
        """The longest pause of the last ``PAUSE_WINDOW_SECONDS``, collections by generation, freezes."""
        since = time.monotonic() - PAUSE_WINDOW_SECONDS
        while self._pauses and self._pauses[0][0] < since:
            self._pauses.popleft()
        longest = max((took for _, took in _copy(self._pauses)), default=0.0)
        return {
            "gc_pause_max_seconds": longest,
            "gc_collections_gen0": self.collections[0],
            "gc_collections_gen1": self.collections[1],
            "gc_collections_gen2": self.collections[2],
            "gc_freezes": self.freezes,
        }

    def _freeze_forever(self, every: float) -> None:
        while not self._stop.wait(every):
            self.freeze()

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started_at = time.perf_counter()
            return
        took = time.perf_counter() - self._started_at
        self.collections[info["generation"]] += 1
        if took >= PAUSE_FLOOR_SECONDS:
            self._pauses.append((time.monotonic(), took))  # atomic: no lock (a lock here could deadlock)


def _copy(pauses: collections.deque[tuple[float, float]]) -> list[tuple[float, float]]:
    """The pauses now. A collection can run (and append) at any allocation, in any thread, even while
    this copies: then copy again."""
    while True:
        try:
            return list(pauses)
        except RuntimeError:  # deque mutated during iteration
            continue
