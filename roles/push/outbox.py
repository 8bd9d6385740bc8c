"""One client's outgoing bytes: written at once when the socket takes them, buffered (bounded) when not.

This is the fan-out's hot path (docs/architecture.md §5). :meth:`Outbox.write` is synchronous: it hands the frame
to the kernel with one non-blocking ``os.write`` on the connection's own file descriptor (never a ``dup``:
that would double the descriptors a node needs) and queues only what the kernel did not take. So one
publish costs each client one system call and no task switch. The connection's writer task
(:meth:`Outbox.drain_forever`) is the only other writer; it runs only while something is queued.

Every server frame of a connection goes through its outbox — data, pong, ping, close — so frames never
interleave. A client whose queue grows past ``limit`` bytes is over budget: ``write`` refuses and the
connection drops it (docs/reliability.md #4), so a stalled reader costs the others nothing.
"""

from __future__ import annotations

import os
from collections import deque

import trio

#: Buffers handed to one ``writev`` call; far below IOV_MAX (1024) and enough to empty a typical backlog.
WRITEV_BATCH = 64


class Outbox:
    __slots__ = ("_fd", "_queue", "queued_bytes", "limit", "broken", "_wakeup")

    def __init__(self, fd: int, limit: int) -> None:
        self._fd = fd
        self._queue: deque[memoryview | bytes] = deque()
        self.queued_bytes = 0
        self.limit = limit
        #: The peer is gone (reset, broken pipe) or the socket was closed: further writes are dropped.
        self.broken = False
        self._wakeup: trio.Event | None = None

    def write(self, data: bytes, *, force: bool = False) -> bool:
        """Send ``data`` now as far as the socket takes it, queue the rest.

        Returns False when the bytes could not be accepted: the socket is broken, or queueing them would
        put the client over its limit (the caller drops the client). ``force`` queues whatever the limit:
        for the few bytes of farewell to a client being dropped. Never blocks, never raises.
        """
        if self.broken:
            return False
        if self._queue:
            # Bytes are already waiting: these must go after them, through the writer task.
            return self._enqueue(data, force)
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.broken = True  # ECONNRESET, EPIPE, EBADF after close: the reader sees the end too
            return False
        if sent == len(data):
            return True
        return self._enqueue(memoryview(data)[sent:], force)

    def _enqueue(self, data: memoryview | bytes, force: bool) -> bool:
        if not force and self.queued_bytes + len(data) > self.limit:
            return False
        self._queue.append(data)
        self.queued_bytes += len(data)
        if self._wakeup is not None:
            self._wakeup.set()
        return True

    def truncate_to_partial_frame(self) -> None:
        """Drop everything queued except the rest of a frame the socket already took part of.

        Used before the last words to a client being dropped: the frame boundary must stay intact for
        the ``reconnect`` and close frames that follow to be readable.
        """
        if not self._queue:
            return
        head = self._queue[0]
        self._queue.clear()
        self.queued_bytes = 0
        if isinstance(head, memoryview):  # only a remainder is ever stored as a view
            self._queue.append(head)
            self.queued_bytes = len(head)

    @property
    def empty(self) -> bool:
        return not self._queue

    def _flush_some(self) -> None:
        """Write what the socket takes now, without blocking."""
        batch = [self._queue[i] for i in range(min(len(self._queue), WRITEV_BATCH))]
        try:
            sent = os.writev(self._fd, batch)
        except BlockingIOError:
            return
        except OSError:
            self.broken = True
            self._queue.clear()
            self.queued_bytes = 0
            return
        self.queued_bytes -= sent
        while sent:
            head = self._queue[0]
            if sent >= len(head):
                sent -= len(head)
                self._queue.popleft()
            else:
                self._queue[0] = memoryview(head)[sent:]
                sent = 0

    async def flush(self) -> None:
        """Wait until everything queued is written (or the socket breaks). Bound it with a cancel scope."""
        while self._queue and not self.broken:
            await trio.lowlevel.wait_writable(self._fd)
            self._flush_some()

    async def drain_forever(self) -> None:
        """The connection's writer task: sleeps while nothing is queued, drains when something is.

        Ends by cancellation (the connection closes) or when the socket breaks."""
        while not self.broken:
            if not self._queue:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                self._wakeup = None
            await self.flush()
