"""A fair waiting room: rejected clients keep their place (FIFO by first arrival).

A client refused at capacity receives a ``queue`` token carrying its first arrival time (signed, so it
cannot be forged to jump ahead). When it returns with that token, it is admitted only if fewer clients
that arrived before it are still waiting than there are free places. Clients that stop retrying leave the
room ``ttl`` after their last try (a retry or two: a crowd that never comes back must not stand ahead of
real newcomers); one that returns later is ranked again by the first arrival its token carries. Sans-io:
times are passed in.

Scope: each gatekeeper process keeps its own room; with several gatekeepers the order is FIFO per
gatekeeper (a client that returns to another gatekeeper still keeps its first-arrival time, which that
gatekeeper honours against its own room).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

#: Entries are bounded so a flood of distinct rejected clients cannot grow memory without limit.
MAX_WAITING = 200_000


@dataclass
class WaitingRoom:
    """Waiting clients kept sorted by first arrival, so ranking one costs O(log n): rejections must stay
    cheaper than admissions even with a large crowd at the door."""

    ttl: float
    _order: list[tuple[float, str]] = field(default_factory=list)  # (first_arrival, queue_id), sorted
    _first_arrival: dict[str, float] = field(default_factory=dict)
    _last_seen: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._first_arrival)

    def wait(self, queue_id: str, first_arrival: float, now: float) -> None:
        if queue_id not in self._first_arrival:
            if len(self._first_arrival) >= MAX_WAITING:
                return  # full: the client still gets a token and retries; it just is not ranked here
            self._first_arrival[queue_id] = first_arrival
            bisect.insort(self._order, (first_arrival, queue_id))
        self._last_seen[queue_id] = now

    def leave(self, queue_id: str) -> None:
        first = self._first_arrival.pop(queue_id, None)
        self._last_seen.pop(queue_id, None)
        if first is not None:
            i = bisect.bisect_left(self._order, (first, queue_id))
            if i < len(self._order) and self._order[i] == (first, queue_id):
                del self._order[i]

    def ahead_of(self, first_arrival: float) -> int:
        """How many waiting clients arrived strictly before ``first_arrival``."""
        return bisect.bisect_left(self._order, (first_arrival, ""))

    def expire(self, now: float) -> None:
        stale = [q for q, seen in self._last_seen.items() if now - seen > self.ttl]
        for q in stale:
            self.leave(q)
