"""Collections on a clock (playtotv.gcpacer): young ones every tick, full ones only when due."""

from __future__ import annotations

import gc
import weakref

import httpx
import pytest
import trio

from playtotv.gcpacer import NEVER, CollectionPacer, pace_collections, paced_heap
from playtotv.devtools.nodeprocess import NodeProcess


#: An embedded node on free ports.
EMBEDDED = {
    "PLAYTOTV_GATEKEEPER_BIND": "127.0.0.1:0",
    "PLAYTOTV_CORE_BIND": "127.0.0.1:0",
    "PLAYTOTV_PUSH_BIND": "127.0.0.1:0",
    "PLAYTOTV_PUSH_POLLING_BIND": "127.0.0.1:0",
    "PLAYTOTV_STORE_URL": "sqlite:///:memory:",
}


class FakeHeap:
    def __init__(self) -> None:
        self.now = 0.0
        self.blocks = 1000
        self.collected: list[int] = []

        self.load = 0.0
        self.after_full: int | None = None  # the heap a full collection leaves (None: as it was)

    def pacer(self, with_load: bool = False, **options: float) -> CollectionPacer:
        return CollectionPacer(clock=lambda: self.now, heap_size=lambda: self.blocks, collect=self._collect,
                               load=(lambda: self.load) if with_load else None, **options)

    def _collect(self, generation: int) -> int:
        self.collected.append(generation)
        if generation == 2 and self.after_full is not None:
            self.blocks = self.after_full
        return 0


def test_young_collections_until_the_heap_has_grown_and_the_interval_has_passed():
    heap = FakeHeap()
    pacer = heap.pacer(full_growth=0.25, full_interval=300.0)
    heap.blocks = 2000  # doubled, but too soon after the last full collection
    heap.now = 299.0
    assert pacer.tick() == 1
    heap.blocks = 1249  # long enough, but grown by less than a quarter
    heap.now = 1000.0
    assert pacer.tick() == 1
    heap.blocks = 1250
    assert pacer.tick() == 2
    assert heap.collected == [1, 1, 2]


def test_a_full_collection_restarts_both_the_clock_and_the_baseline():
    heap = FakeHeap()
    pacer = heap.pacer(full_growth=0.25, full_interval=300.0)
    heap.now, heap.blocks = 300.0, 1300
    assert pacer.tick() == 2
    heap.now, heap.blocks = 650.0, 1600  # 23 % above the heap the last full collection left
    assert pacer.tick() == 1
    heap.blocks = 1625
    assert pacer.tick() == 2


def test_a_heap_grown_by_clients_joining_is_not_walked():
    # A push node: 1,000 blocks at start-up (frozen), ~300 blocks per connected client.
    heap = FakeHeap()
    pacer = heap.pacer(with_load=True, full_growth=0.25, full_interval=300.0)
    heap.load, heap.blocks = 10, 4000
    assert pacer.tick() == 1  # too little load to measure the heap per client by
    heap.load, heap.blocks = 100, 31000  # 300 a client: the first measure
    assert pacer.tick() == 1
    heap.now, heap.load, heap.blocks = 1000.0, 1300, 391000  # 390 times the heap, and the same per client
    assert pacer.tick() == 1
    heap.blocks = 1000 + 1300 * 370  # 23 % more per client: not yet
    assert pacer.tick() == 1
    heap.blocks = 1000 + 1300 * 375  # 25 % more per client (garbage, or clients grown heavier): walk it
    assert pacer.tick() == 2
    assert heap.collected == [1, 1, 1, 1, 2]


def test_clients_leaving_their_garbage_behind_bring_the_walk():
    heap = FakeHeap()
    pacer = heap.pacer(with_load=True, full_growth=0.25, full_interval=300.0)
    heap.load, heap.blocks = 1000, 301000
    assert pacer.tick() == 1  # measured: 300 blocks a client
    heap.now, heap.load, heap.blocks = 400.0, 500, 151000  # half of them gone, their objects freed
    assert pacer.tick() == 1
    heap.load, heap.blocks = 250, 151000  # half of the rest gone, their objects still there (cycles)
    heap.after_full = 76000  # what the walk will free
    assert pacer.tick() == 2
    heap.now = 800.0
    assert pacer.tick() == 1  # measured again after the walk: 300 a client
    assert heap.collected == [1, 1, 2, 1]


def test_a_node_with_hardly_any_load_goes_by_the_heap_alone():
    heap = FakeHeap()
    pacer = heap.pacer(with_load=True, full_growth=0.25, full_interval=300.0)
    heap.now, heap.load, heap.blocks = 300.0, 20, 1250
    assert pacer.tick() == 2


def test_paced_heap_hands_full_collections_to_the_pacer_and_gives_them_back():
    before = gc.get_threshold()
    try:
        with paced_heap():
            young, middle, full = gc.get_threshold()
            assert (young, middle) == before[:2] and full == NEVER
            assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == before
    finally:
        gc.unfreeze()


class Node:
    """A reference cycle: only a collection frees it."""

    def __init__(self) -> None:
        self.me = self


def test_a_tick_frees_young_cycles():
    pacer = CollectionPacer()
    gc.collect()  # counts at zero: no automatic collection promotes the cycle out of reach of a tick
    cycle = Node()
    freed = weakref.ref(cycle)
    del cycle
    assert freed() is not None
    assert pacer.tick() == 1
    assert freed() is None


async def test_the_task_collects_every_interval_until_cancelled(autojump_clock):
    before = gc.get_stats()[1]["collections"]
    thresholds = gc.get_threshold()
    try:
        with trio.move_on_after(2.2):
            await pace_collections(every=0.5)
        assert gc.get_stats()[1]["collections"] - before >= 4
        assert gc.get_threshold() == thresholds  # cancelled: CPython's thresholds are back
    finally:
        gc.unfreeze()


async def _paced_collections(url: str) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith('playtotv_gc_pause_seconds_count{generation="1"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.slow  # a real `playtotv serve` process
async def test_a_serving_push_node_paces_its_collections(nursery):
    # Idle, CPython's own thresholds run a generation-1 collection every few seconds at most; paced,
    # there is one every YOUNG_EVERY (0.5 s).
    node = await NodeProcess("all", env=EMBEDDED).start(nursery)
    url = node.listening["core"]
    before = await _paced_collections(url)
    await trio.sleep(3.0)
    assert await _paced_collections(url) - before >= 4
    assert await node.terminate() == 0
