"""Garbage-collection pauses, measured: a histogram on ``/metrics`` and a log line for the slow ones.

A CPython collection stops the event loop for as long as it walks the tracked objects, so on a push node
it delays every delivery of that moment (bench overload: one-off stalls of 0.3-0.7 s at a 0.1 CPU
budget). Whether a stall was a collection is otherwise guesswork; with this, an operator (and the
benchmark) reads it off ``playtotv_gc_pause_seconds{generation}`` or the node's log.

``gc.callbacks`` is process-wide: with several nodes in one process (tests), each node's timer sees
every collection of the process, which is what a pause is anyway.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

from prometheus_client import Histogram

log = logging.getLogger("playtotv.gc")

#: A pause this long (wall time) is logged: about half the loop-lag SLO's default, long enough that a
#: healthy node never logs one and short enough to show the collections that cost a delivery its SLO.
SLOW_PAUSE_SECONDS = 0.05


class PauseTimer:
    """Times every collection between gc.callbacks' "start" and "stop" (wall and this thread's CPU:
    under a CPU quota the two differ by the time the kernel held the process back)."""

    def __init__(self, histogram: Histogram, slow_after: float = SLOW_PAUSE_SECONDS) -> None:
        self.histogram = histogram
        self.slow_after = slow_after
        self._started: tuple[float, float] | None = None

    def __enter__(self) -> PauseTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = (time.perf_counter(), time.thread_time())
            return
        if self._started is None:  # installed in the middle of a collection
            return
        wall_started, cpu_started = self._started
        self._started = None
        wall = time.perf_counter() - wall_started
        generation = info.get("generation", -1)
        self.histogram.labels(str(generation)).observe(wall)
        if wall >= self.slow_after:
            fields = {"generation": generation, "wall_ms": round(wall * 1000, 1),
                      "cpu_ms": round((time.thread_time() - cpu_started) * 1000, 1),
                      "collected": info.get("collected")}
            log.warning("slow garbage collection", extra={"fields": fields})
