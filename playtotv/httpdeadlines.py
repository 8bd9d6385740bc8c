"""Deadlines of HTTP connections: how long a client may take to send a request and to take its response.

Hypercorn bounds the wait for a request head (its keep-alive timer) but nothing after it: a body that
never completes (``Content-Length: 1000``, one byte, silence), or a response the client never reads,
held the connection and its descriptor for ever. And when a handler answered before the body was in (a
401, a 413), hypercorn's close of the connection ran inside the request's task, which quart-trio
cancels once the response is out: the close never happened, and a keep-alive client hung.

Every HTTP connection has a ``ConnectionClock`` and a task that, when its deadline passes, closes the
socket (which wakes everything waiting on it, hypercorn's shielded writes included) and cancels the
connection. The ASGI middleware ``RequestDeadlines`` moves the deadline as each request goes; HTTP/2
streams can overlap, so each exchange has its own and the earliest counts:

    waiting for a request   ``timeout`` from the connection's opening or its last response
    receiving the body      ``timeout`` from the request head
    the handler at work     none: a long poll waits up to a minute by design
    sending the response    ``timeout`` from its start

A client that closes its side ends the connection at once (``ClockedStream``): hypercorn aborts any
request in progress then anyway, but kept the connection, descriptor and place under the caps included,
until its keep-alive timer ran out.

The clock reaches the middleware through the ASGI ``state`` hypercorn copies into every request's
scope from the connection (``CLOCK_KEY``).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio

#: Where a request's ``scope["state"]`` carries its connection's clock.
CLOCK_KEY = "playtotv.connection_clock"

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class ConnectionClock:
    """The deadline of one HTTP connection (see the module docstring)."""

    __slots__ = ("timeout", "_scope", "_idle_deadline", "_exchanges", "_next_exchange")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._idle_deadline = trio.current_time() + timeout
        self._scope = trio.CancelScope(deadline=self._idle_deadline)
        self._exchanges: dict[int, float] = {}
        self._next_exchange = 0

    @property
    def deadline(self) -> float:
        return self._scope.deadline

    async def watch(self, stream: trio.abc.AsyncResource, connection: trio.CancelScope) -> None:
        """When the deadline passes, close ``stream`` and cancel ``connection`` (the scope serving it).
        Run it beside the connection; cancel it once the connection is over."""
        with self._scope:
            await trio.sleep_forever()
        await trio.aclose_forcefully(stream)
        connection.cancel()

    def expire(self) -> None:
        """End the connection now."""
        self._scope.cancel()

    def begin(self) -> int:
        """A request head is in: its body must follow within the timeout."""
        exchange = self._next_exchange
        self._next_exchange += 1
        self._set(exchange, trio.current_time() + self.timeout)
        return exchange

    def working(self, exchange: int) -> None:
        self._set(exchange, math.inf)

    def responding(self, exchange: int) -> None:
        self._set(exchange, trio.current_time() + self.timeout)

    def done(self, exchange: int) -> None:
        self._exchanges.pop(exchange, None)
        if not self._exchanges:
            self._idle_deadline = trio.current_time() + self.timeout
        self._update()

    def _set(self, exchange: int, deadline: float) -> None:
        self._exchanges[exchange] = deadline
        self._update()

    def _update(self) -> None:
        self._scope.deadline = min(self._exchanges.values(), default=self._idle_deadline)


class ClockedStream:
    """A connection's socket stream as hypercorn sees it: the end of the client's data expires the clock.

    Only what hypercorn's trio ``TCPServer`` uses is here; no ``do_handshake``: it tells TLS streams from
    plain ones by that attribute."""

    __slots__ = ("_stream", "_clock", "socket")

    def __init__(self, stream: trio.SocketStream, clock: ConnectionClock) -> None:
        self._stream = stream
        self._clock = clock
        self.socket = stream.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self._stream.receive_some(max_bytes)
        if not data:
            self._clock.expire()
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


class RequestDeadlines:
    """ASGI middleware that reports each request's progress to its connection's clock.

    It also shields the last message of a response: hypercorn, while sending it, finishes the exchange
    (recycles the connection for the next request, or closes it when the client had not sent its whole
    body); quart-trio cancels the request's task as soon as the request ends, which cut that short and
    left the connection open and stuck. Shielded, it completes; the clock still bounds it (a response
    not taken within the timeout ends with the socket closed)."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        clock = scope.get("state", {}).get(CLOCK_KEY) if scope["type"] != "lifespan" else None
        if clock is None:
            await self.app(scope, receive, send)
            return
        # Any other kind of exchange (a WebSocket upgrade: no Quart app of ours has a WebSocket route)
        # keeps the receiving deadline to its end.
        exchange = clock.begin()
        responding = False

        async def timed_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False) and not responding:
                clock.working(exchange)
            return message

        async def timed_send(message: Message) -> None:
            nonlocal responding
            kind = message["type"]
            if kind == "http.response.start":
                responding = True
                clock.responding(exchange)
            elif kind == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True):
                    await send(message)
                return
            await send(message)

        try:
            await self.app(scope, timed_receive, timed_send)
        finally:
            clock.done(exchange)
