"""Fan-out delay over a sliding window: the push node's quality-of-service figure for the registry.

The delay of one publish is ``sent_at`` (when the broker assigned the offset) to the moment the hub
finished writing the frame to its last local client. The gatekeeper reads the p99 from each node's
heartbeat (``qos["fanout_p99_ms"]``) to decide whether the platform still meets its promise.
"""

from __future__ import annotations

import math
from collections import deque

#: Old enough samples say nothing about the node now. Ten seconds, not a minute: the gatekeeper admits on
#: this figure every second, and with 60 s one burst of a second kept it in "breach" for a minute
#: (bench overload: it backed off 2 %/tick from 369 to ~100 while admitted clients saw 27-66 ms).
#: Ten seconds still holds enough samples for a p99 at a few messages a second per channel.
WINDOW_SECONDS = 10.0
#: Bounds memory and the sort in ``percentile`` when a channel publishes very fast.
MAX_SAMPLES = 10_000


class SlidingWindow:
    def __init__(self, window: float = WINDOW_SECONDS, max_samples: int = MAX_SAMPLES) -> None:
        self.window = window
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def record(self, now: float, value: float) -> None:
        self._samples.append((now, value))

    def percentile(self, now: float, fraction: float) -> float | None:
        """The ``fraction`` quantile (nearest rank) of the samples younger than the window, or None."""
        cutoff = now - self.window
        while self._samples and self._samples[0][0] < cutoff:
            self._samples.popleft()
        if not self._samples:
            return None
        values = sorted(v for _, v in self._samples)
        rank = max(0, math.ceil(fraction * len(values)) - 1)
        return values[rank]
