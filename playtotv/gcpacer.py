"""Garbage collection paced by the clock, between the event loop's steps (serving push nodes).

CPython starts a young collection once the tracked objects allocated *minus those freed* since the last
one pass 700. On a push node holding steady clients that count hardly moves: each keepalive round trip
frees the objects of a parked read (old, promoted long ago) as it makes the next one's (young), so the
young generations fill for seconds on end and the collection that finally comes walks tens of thousands
of objects, a stall of the loop that lands inside whatever it was doing, often a fan-out pass, and under a
small CPU budget costs deliveries their SLO. So, once the node is ready:

- the start-up heap is frozen (modules, settings: never garbage, never walked again);
- the young generations are collected every ``YOUNG_EVERY`` by a task of the loop: each walks only what
  the last half second left alive and runs between two steps of the loop, never in the middle of a
  fan-out pass. CPython's own young collections stay on: a burst of allocations (a wave of handshakes)
  still triggers them;
- full collections, which walk every tracked object, are the pacer's alone: once the heap has grown by
  ``FULL_GROWTH`` since the last one (CPython's own rule against quadratic work), and no more often than
  every ``FULL_INTERVAL``. CPython's rule counts objects promoted to the old generation, and here most of
  them die there by reference count one keepalive later: it would walk the whole heap far more often than
  the heap grows;
- ...and, on a node that reports a load (a push node's connections), only once the heap *per unit of
  load* has grown by ``FULL_GROWTH`` too. A heap that grew because clients joined holds those clients,
  not garbage: walking it frees nothing and stops the loop for a time proportional to the clients
  connected. Cyclic garbage left by clients who went away still shows: the heap per client then grows,
  and the walk comes.

Only in a serving process: tests run several nodes in one process and keep CPython's defaults. The
measurements behind this are in docs/decisions.md.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio

#: How often the young generations are collected. Short enough that each walks only what half a second
#: left alive; long enough that they cost nothing measurable.
YOUNG_EVERY = 0.5
#: A full collection waits until the heap (allocated blocks) has grown by this share since the last one...
FULL_GROWTH = 0.25
#: ...and until this long after it: a full collection stops the loop for its whole walk, so it is rare,
#: and the cyclic garbage it would have freed in the meantime is bounded by five minutes of churn.
FULL_INTERVAL = 300.0
#: CPython's own full collections are switched off by a threshold it never reaches.
NEVER = 1 << 30
#: The heap per unit of load is taken over at least this much load: with a handful of clients, the
#: node's fixed heap (broker, windows, histories) is most of it, and one client more or less is not news.
MIN_LOAD = 50.0


class CollectionPacer:
    """Decides, at each tick, between a young collection and a full one (sans-io: clock, heap size and the
    collector are injected for tests). ``load``: the node's load in units the heap grows with (a push
    node's connections), or None: the heap's growth alone decides."""

    def __init__(
        self,
        *,
        full_growth: float = FULL_GROWTH,
        full_interval: float = FULL_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        heap_size: Callable[[], int] = sys.getallocatedblocks,
        collect: Callable[[int], int] = gc.collect,
        load: Callable[[], float] | None = None,
    ) -> None:
        self.full_growth = full_growth
        self.full_interval = full_interval
        self._clock = clock
        self._heap_size = heap_size
        self._collect = collect
        self._load = load
        self._full_at = clock()
        self._heap_at_start = self._heap_after_full = heap_size()  # the start-up heap: frozen, never walked
        #: The heap per unit of load after the last full collection; None until there is load to measure
        #: it by (at start-up the walked heap is nearly empty: any client would look like growth).
        self._per_load_after_full: float | None = None

    def _per_load(self) -> float | None:
        if self._load is None:
            return None
        load = self._load()
        if load < MIN_LOAD and self._per_load_after_full is None:
            return None
        return (self._heap_size() - self._heap_at_start) / max(load, MIN_LOAD)

    def full_due(self) -> bool:
        if (self._clock() - self._full_at < self.full_interval
                or self._heap_size() < self._heap_after_full * (1.0 + self.full_growth)):
            return False
        if self._load is None:
            return True
        per_load = self._per_load()
        if per_load is None:
            return True  # hardly any load ever: the heap's growth decides alone (and the walk is short)
        if self._per_load_after_full is None:
            return False  # the load has only just come: measured first, by this tick's young collection
        return per_load >= self._per_load_after_full * (1.0 + self.full_growth)

    def tick(self) -> int:
        """Collect once; returns the oldest generation collected (1: young, 2: full)."""
        if self.full_due():
            self._collect(2)
            self._full_at = self._clock()
            self._heap_after_full = self._heap_size()
            self._per_load_after_full = self._per_load()
            return 2
        self._collect(1)
        if self._per_load_after_full is None:  # first measured once there is load, after a young collection
            self._per_load_after_full = self._per_load()
        return 1


@contextmanager
def paced_heap(**pacer_options: Any) -> Iterator[CollectionPacer]:
    """Freeze the heap as it is, hand full collections to the pacer; CPython's thresholds come back on
    exit (the frozen objects stay frozen: they were live at start-up and still are)."""
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(thresholds[0], thresholds[1], NEVER)
    try:
        yield CollectionPacer(**pacer_options)
    finally:
        gc.set_threshold(*thresholds)


async def pace_collections(every: float = YOUNG_EVERY, load: Callable[[], float] | None = None) -> None:
    """The pacing task: runs until cancelled (the node stops). ``load``: see ``CollectionPacer``."""
    with paced_heap(load=load) as pacer:
        while True:
            await trio.sleep(every)
            pacer.tick()
