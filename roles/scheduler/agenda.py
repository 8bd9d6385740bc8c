"""The scheduler's agenda: jobs kept sorted by due time (a heap), so the leader sleeps until the next
one instead of polling the store every tick. Sans-io: times are passed in; tests drive it directly.

A job is identified by its ``key``; adding a key already present moves it to the new due time (an
episode restarted with another ``at``, an interaction re-read with its deadline).

The heap is ordered by when the leader must *start* on a job, not by when it is due: a fire job comes out
``fire_lead`` seconds before its timecode so its reads and the answer-set marker are done ahead, and only
the open itself waits for the timecode (the fire never happens early: the task sleeps until ``due``).
Other jobs come out at their due time (a close job taken early would find nothing due yet).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Job:
    kind: str  # "start" (episode at starts_at), "fire" (timeline entry), "close" (deadline)
    episode_id: str
    interaction_id: str | None
    due: float
    #: A timeline entry already in the past when its episode went live (a late start): fired late within
    #: the grace period, else skipped. Entries that fall due while live are never skipped (late, not never).
    skip_if_late: bool = False

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.episode_id}:{self.interaction_id or ''}"


@dataclass
class Agenda:
    #: Seconds before its due time a fire job comes out (0: at its due time, like every other job).
    fire_lead: float = 0.0
    _heap: list[tuple[float, int, Job]] = field(default_factory=list)
    _current: dict[str, Job] = field(default_factory=dict)  # key → the live version of that job
    _seq: itertools.count = field(default_factory=itertools.count)

    def __len__(self) -> int:
        return len(self._current)

    def add(self, job: Job) -> None:
        existing = self._current.get(job.key)
        if existing == job:
            return
        self._current[job.key] = job
        heapq.heappush(self._heap, (self._start_at(job), next(self._seq), job))  # an older version becomes stale

    def _start_at(self, job: Job) -> float:
        return job.due - self.fire_lead if job.kind == "fire" else job.due

    def discard_episode(self, episode_id: str) -> None:
        """Forget every job of an episode (it ended: what remains is cancelled)."""
        for key in [k for k, j in self._current.items() if j.episode_id == episode_id]:
            del self._current[key]

    def clear(self) -> None:
        self._heap.clear()
        self._current.clear()

    def _drop_stale(self) -> None:
        while self._heap and self._current.get(self._heap[0][2].key) is not self._heap[0][2]:
            heapq.heappop(self._heap)

    def next_due(self) -> float | None:
        """When the next job must be started on (see the module docstring), or None when empty."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[Job]:
        """Every job to start on at ``now`` or earlier, earliest first, removed from the agenda."""
        due: list[Job] = []
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                return due
            _, _, job = heapq.heappop(self._heap)
            del self._current[job.key]
            due.append(job)
