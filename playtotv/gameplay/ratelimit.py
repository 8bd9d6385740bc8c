"""Per-ticket token buckets, in process memory (docs/architecture.md §7: per-ticket rate limits).

In-process is enough: clients are sticky to one core, and a client spreading its requests over several
cores gets at most (cores × rate), still bounded. No network call on the hot path.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: Buckets kept before idle ones are swept; bounds memory whatever the number of tickets seen.
MAX_BUCKETS = 200_000


class TokenBuckets:
    """``allow(key)`` returns None when the request may go ahead, else the seconds until it could.

    A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; each request takes one.
    """

    def __init__(self, rate: float, burst: int, *, max_buckets: int = MAX_BUCKETS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_buckets = max_buckets
        self._clock = clock
        # key → (tokens, time of last refill)
        self._buckets: dict[str, tuple[float, float]] = {}

    def wait(self, key: str) -> float | None:
        """Like ``allow`` but takes nothing: None when ``key`` could go ahead now, else the seconds until it
        could."""
        now = self._clock()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        return None if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def allow(self, key: str) -> float | None:
        now = self._clock()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
        if key not in self._buckets and len(self._buckets) >= self.max_buckets:
            self._sweep(now)
        self._buckets[key] = (tokens - 1.0, now)
        return None

    def _sweep(self, now: float) -> None:
        """Forget buckets that have refilled completely (forgetting them changes nothing); if every bucket
        is busy, forget the oldest half, which at worst grants their owners one extra burst."""
        full_after = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
        if len(self._buckets) >= self.max_buckets:
            keep = list(self._buckets.items())[len(self._buckets) // 2:]
            self._buckets = dict(keep)

    def __len__(self) -> int:
        return len(self._buckets)
