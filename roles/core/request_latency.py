"""Request latency as the gatekeeper's QoS signal (``core_p95_ms`` in the registry)."""

from __future__ import annotations

import time
from collections import deque

import trio
from quart import Response, g

from playtotv.percentile import percentile

#: Latest requests considered; at a few thousand requests per second this is the last second or so.
WINDOW = 2048
REPORT_INTERVAL = 1.0
PERCENTILE = 0.95


class LatencyWindow:
    def __init__(self, size: int = WINDOW) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def observe(self, seconds: float) -> None:
        self._samples.append(seconds)

    def percentile(self, q: float = PERCENTILE) -> float:
        return percentile(sorted(self._samples), q) or 0.0

    async def after_request(self, response: Response) -> Response:
        started = getattr(g, "started", None)  # set by playtotv.http's before_request
        if started is not None:
            self.observe(time.perf_counter() - started)
        return response

    async def report_forever(self, qos: dict[str, float]) -> None:
        while True:
            qos["core_p95_ms"] = round(self.percentile() * 1000.0, 2)
            self._samples.clear()  # each report covers the last interval only
            await trio.sleep(REPORT_INTERVAL)
