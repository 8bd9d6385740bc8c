"""Recovery by offset, sans-io: what a client that says "I saw up to (epoch, offset)" is owed.

Used for a WebSocket ``subscribe`` with ``since`` and for every long poll (docs/api.md §5). No I/O here:
:func:`assess` compares a client's position with the channel's, and :class:`RecentFrames` keeps the last
encoded ``message`` frames a push node delivered, so most recoveries (a short reconnect, every poll that
follows a publish) are served from memory without asking the broker (docs/reliability.md #1, #3). The hub reads
broker history only for what the ring does not hold.

Never a silent gap (docs/reliability.md #2): any position that cannot be filled exactly — another epoch, ahead
of the channel, further behind than the cap, malformed — is answered with ``recovered: false`` at the
channel's current position.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import islice


@dataclass(frozen=True, slots=True)
class UpToDate:
    """Nothing missed: attach (or, for a poll, wait)."""


@dataclass(frozen=True, slots=True)
class Lost:
    """The gap cannot be filled: answer ``recovered: false`` at the current position."""

    reason: str


@dataclass(frozen=True, slots=True)
class Missing:
    """Offsets ``first..last`` (inclusive, same epoch) must be replayed."""

    first: int
    last: int


Verdict = UpToDate | Lost | Missing

UP_TO_DATE = UpToDate()


def assess(client_epoch: str, client_offset: int, epoch: str, offset: int, limit: int) -> Verdict:
    """Compare a client's last seen position with the channel's current ``(epoch, offset)``.

    ``limit`` caps what one client may have replayed (push.recovery_limit): past it a reconnect storm
    would turn into a history-reading storm, so the client reloads over REST instead.
    """
    if client_epoch != epoch:
        return Lost("epoch changed")
    if client_offset > offset:
        return Lost("position ahead of the channel")
    if client_offset == offset:
        return UP_TO_DATE
    if offset - client_offset > limit:
        return Lost(f"more than {limit} messages missed")
    return Missing(client_offset + 1, offset)


class RecentFrames:
    """The last ``capacity`` encoded ``message`` frames of one channel, gap-free by construction.

    The hub appends every frame it fans out, in offset order, so the frames held are exactly the offsets
    ``last - len + 1 .. last``; ``clear`` when the channel's epoch changes.
    """

    __slots__ = ("_frames", "last")

    def __init__(self, capacity: int) -> None:
        self._frames: deque[bytes] = deque(maxlen=capacity)
        self.last = 0  # offset of the newest frame held (meaningless while empty)

    def __len__(self) -> int:
        return len(self._frames)

    def append(self, offset: int, frame: bytes) -> None:
        if self._frames and offset != self.last + 1:
            # A caller bug would otherwise serve a silent gap later; start over instead.
            self._frames.clear()
        self._frames.append(frame)
        self.last = offset

    def clear(self) -> None:
        self._frames.clear()

    @property
    def first(self) -> int:
        """Offset of the oldest frame held (``last + 1`` when empty: nothing is held)."""
        return self.last - len(self._frames) + 1

    def covers(self, first: int, last: int) -> bool:
        return bool(self._frames) and self.first <= first and last <= self.last

    def slice(self, first: int, last: int) -> list[bytes]:
        """Frames ``first..last`` inclusive; the caller checked :meth:`covers`."""
        if last < first:
            return []
        start = first - self.first
        return list(islice(self._frames, start, start + (last - first + 1)))
