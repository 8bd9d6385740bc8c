"""Recent admissions, and how many of them have not connected yet (sans-io: times are passed in).

``admitted`` = sessions the push nodes hold + admissions not yet connected. A gatekeeper cannot
tell which of its admissions connected, but it sees each push node's session count at every snapshot:
sessions gained since just before the oldest recent admission are recent admissions having arrived. So
``pending`` = recent admissions − that gain. Counting every recent admission instead counted each
newcomer twice for the whole window (once admitted, once connected): ``bench overload`` saw capacity
"full" with a quarter of it unused, and arrivals refused while the push node had room.

The gain is the net change summed over the nodes present in both snapshots: clients moving between nodes
net to zero, and a node that (re)appears in the registry brings no gain. Departures hide arrivals, so the
estimate errs towards counting more (refusing early), not towards admitting past capacity.
"""

from __future__ import annotations

from collections import deque

#: An admitted client normally connects to push within this long; until then it counts as pending.
ADMISSION_WINDOW = 10


class Admissions:
    """Bounded: one counter and one snapshot of per-node sessions per second of the window."""

    def __init__(self, window: int = ADMISSION_WINDOW) -> None:
        self.window = window
        self._buckets: deque[list[int]] = deque()  # [second, admissions]
        self._sessions: deque[tuple[float, dict[str, float]]] = deque()  # (time, sessions per push node)

    def add(self, now: float) -> None:
        second = int(now)
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += 1
        else:
            self._buckets.append([second, 1])
        self._trim(second)

    def observe(self, now: float, sessions: dict[str, float]) -> None:
        """A registry snapshot: sessions (WebSockets + polls) per push node id."""
        self._sessions.append((now, sessions))
        self._trim(int(now))

    def recent(self, now: float) -> int:
        self._trim(int(now))
        return sum(count for _, count in self._buckets)

    def pending(self, now: float, recent: int, sessions: dict[str, float]) -> int:
        """Of ``recent`` admissions (this gatekeeper's and others'), those not connected yet."""
        self._trim(int(now))
        if not recent or not self._sessions:
            return recent
        base = self._baseline()
        gain = sum(count - base[node] for node, count in sessions.items() if node in base)
        return max(0, recent - max(0, int(gain)))

    def _baseline(self) -> dict[str, float]:
        """The last snapshot taken before the oldest admission in the window (else the oldest kept)."""
        first_admission = self._buckets[0][0] if self._buckets else None
        base = self._sessions[0][1]
        for taken, sessions in self._sessions:
            if first_admission is None or taken >= first_admission:
                break
            base = sessions
        return base

    def _trim(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - self.window:
            self._buckets.popleft()
        # Keep one snapshot from before the window: it is the baseline of its oldest admissions.
        while len(self._sessions) > 1 and self._sessions[1][0] <= second - self.window:
            self._sessions.popleft()
