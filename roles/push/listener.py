"""The WebSocket listener: accepting, handshaking, keepalive, and the drain.

Accepting runs on ``playtotv.accept.serve_tcp``, like every listener of the node: when ``accept()``
fails for lack of resources (EMFILE, ENFILE, ENOMEM, ENOBUFS) it sleeps 100 ms and keeps serving
(docs/reliability.md #6), logging it once per interval; connections over the listener's cap or the node's
per-address cap are closed on accept. Connections live in their own nursery, so stopping the accept
loop (drain) leaves them open until each has been told to reconnect and has closed or run out of grace.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from functools import partial

import trio
from wsproto.events import CloseConnection
from wsproto.utilities import LocalProtocolError

from playtotv.accept import ConnectionGate, serve_tcp
from playtotv.credentials import Ticket
from playtotv.logs import event
from playtotv.settings import split_bind

from . import handshake, wsframe
from .connection import ConnectionServices, WsConnection
from .users import UserSlots

log = logging.getLogger("playtotv.push.ws")

#: Pending connections the kernel queues for us: a reconnect storm arrives all at once (docs/reliability.md #3).
LISTEN_BACKLOG = 4096
#: The keepalive sweep looks at every connection this often (at most); pings go to those quiet for
#: ``push.keepalive_interval``, so they spread over time as connections do.
KEEPALIVE_TICK_MAX = 1.0
#: Draining clients are told to reconnect after a random delay up to this many seconds, so they do not
#: all arrive at the next node in the same instant.
DRAIN_RECONNECT_SPREAD = 3.0
#: Longest the drain waits for clients to close after being told to reconnect (it also never takes
#: more than half of node.drain_seconds, leaving the rest of the node time to stop).
DRAIN_GRACE_MAX = 5.0
#: Handshakes a node processes at once (parse, ticket check, answer); the rest wait, request head in,
#: within ``push.handshake_timeout``. A handshake costs a node as much CPU as a few hundred fan-out
#: deliveries (~3 ms vs ~16 µs, bench overload), so unbounded, a burst of admissions puts dozens of them
#: in one trio scheduler batch ahead of the fan-out task (at 0.1 CPU, ~3 ms of CPU is 30 ms of delay
#: each). Bounded, a fan-out waits behind two at most. It does not make handshakes cheaper: a node whose
#: CPU is saturated by fan-out plus handshakes still delays deliveries (the gatekeeper's pace prevents that).
MAX_CONCURRENT_HANDSHAKES = 2
#: TCP connections the listener holds beyond ``push.max_connections``: clients still handshaking, so a
#: burst at a full node is answered 503 (with Retry-After) rather than cut off unanswered.
HANDSHAKE_HEADROOM = 1024


def max_open(max_connections: int) -> int:
    """The listener's cap on TCP connections for ``push.max_connections`` WebSockets."""
    return max_connections + HANDSHAKE_HEADROOM


class Connections:
    """The open connections of a node, for keepalive, load reports and the drain."""

    def __init__(self) -> None:
        self.open: set[WsConnection] = set()
        self._emptied: trio.Event | None = None

    def __len__(self) -> int:
        return len(self.open)

    def add(self, conn: WsConnection) -> None:
        self.open.add(conn)

    def discard(self, conn: WsConnection) -> None:
        self.open.discard(conn)
        if not self.open and self._emptied is not None:
            self._emptied.set()

    async def wait_empty(self) -> None:
        if self.open:
            self._emptied = trio.Event()
            await self._emptied.wait()


class WebSocketServer:
    """Accepts clients on ``listeners`` and serves each as a WsConnection."""

    def __init__(self, services: ConnectionServices, verify_ticket: Callable[[str], Ticket], *,
                 handshake_timeout: float, max_connections: int, keepalive_interval: float,
                 users: UserSlots | None = None) -> None:
        self.services = services
        #: Connections per user, shared with the long polls (``users.py``).
        self.users = users if users is not None else UserSlots(services.settings.max_connections_per_user)
        self.verify_ticket = verify_ticket
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections
        self.keepalive_interval = keepalive_interval
        self.connections = Connections()
        self.draining = False
        self.handshakes = trio.CapacityLimiter(MAX_CONCURRENT_HANDSHAKES)

    def at_capacity(self) -> bool:
        return self.draining or len(self.connections) >= self.max_connections

    async def handle(self, stream: trio.SocketStream) -> None:
        """One accepted TCP connection, from handshake to close (serve_tcp closes the stream)."""
        accepted: handshake.Accepted | None = None
        with trio.move_on_after(self.handshake_timeout):  # slowloris: a slow head is just hung up on
            try:
                accepted = await handshake.accept(stream, self.verify_ticket, at_capacity=self.at_capacity,
                                                  limiter=self.handshakes, users=self.users)
            except (handshake.Refused, trio.BrokenResourceError, trio.ClosedResourceError):
                return
        if accepted is None:
            return
        user_id = accepted.ticket.user_id
        if not self.users.acquire(user_id):
            # Another handshake of this user took its last slot while this one was answered.
            with trio.move_on_after(self.handshake_timeout):
                await _close_at_once(stream, accepted, self.users.refusal())
            return
        conn = WsConnection(self.services, stream, accepted.connection, user_id)
        self.connections.add(conn)
        try:
            await conn.serve()
        except Exception:  # noqa: BLE001 — trio.Cancelled is a BaseException and passes through
            # A bug met by one client must cost that client its connection, not the node its 10,000.
            log.exception("websocket connection failed", extra={"fields": {"user": conn.user_id}})
        finally:
            self.connections.discard(conn)
            self.users.release(user_id)

    async def keepalive(self) -> None:
        """Ping every client that has been quiet for keepalive_interval (its pong resets its idle timer)."""
        interval = self.keepalive_interval
        tick = min(KEEPALIVE_TICK_MAX, interval / 4)
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            for conn in list(self.connections.open):
                if now - conn.last_heard >= interval and now - conn.last_ping >= interval:
                    conn.send_ping(now)

    def drain(self) -> None:
        """Tell every client to reconnect (jittered), and start closing each."""
        for conn in list(self.connections.open):
            conn.drain(after=round(random.uniform(0, DRAIN_RECONNECT_SPREAD), 3))


async def _close_at_once(stream: trio.SocketStream, accepted: handshake.Accepted, reason: str) -> None:
    """A close frame (1008, with the reason) right after the upgrade; the caller hangs up after it."""
    try:
        data = accepted.connection.send(CloseConnection(code=wsframe.CLOSE_POLICY_VIOLATION, reason=reason))
        await stream.send_all(data)
    except (LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client is gone already


async def serve_websockets(
    server: WebSocketServer,
    bind: str,
    draining: trio.Event,
    drain_grace: float,
    gate: ConnectionGate,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``draining`` is set, then stop accepting, drain every connection and return.

    Reports ``ws://host:port`` (the real port when ``bind`` asked for port 0)."""
    host, port = split_bind(bind)
    listeners = await trio.open_tcp_listeners(port, host=host, backlog=LISTEN_BACKLOG)
    sockname = listeners[0].socket.getsockname()
    shown_host = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
    url = f"ws://{shown_host}:{sockname[1]}"
    async with trio.open_nursery() as connection_nursery:
        async with trio.open_nursery() as accept_nursery:
            await accept_nursery.start(
                partial(serve_tcp, server.handle, listeners, gate, handler_nursery=connection_nursery)
            )
            accept_nursery.start_soon(server.keepalive)
            event(log, "listening", role="push", url=url)
            task_status.started(url)
            await draining.wait()
            accept_nursery.cancel_scope.cancel()  # closes the listeners: new clients go elsewhere
        server.draining = True  # handshakes already under way are refused (503) rather than served
        event(log, "draining websocket clients", connections=len(server.connections))
        server.drain()
        with trio.move_on_after(drain_grace):
            await server.connections.wait_empty()
        connection_nursery.cancel_scope.cancel()
