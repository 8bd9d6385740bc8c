"""One WebSocket client after its handshake: reading its frames, writing ours, closing it.

Tasks and resources
    Each connection runs two tasks: the reader (this module's ``serve``) and the writer
    (``Outbox.drain_forever``), which only wakes while the kernel's send buffer is full. Every frame the
    server sends goes through the outbox, written synchronously from whoever produces it (the hub's
    fan-out, a pong, a close), so nothing interleaves and the fan-out never waits for a client.

Timeouts and limits (docs/reliability.md #5)
    The reader's deadline is ``idle_timeout`` after the last complete message, ping or pong heard (a
    client that trickles one byte a minute is still idle); the node pings quiet clients every
    ``keepalive_interval`` so a live client always answers in time. A message larger than
    ``max_frame_bytes`` closes the connection (1009); a frame the parser refuses closes it (1002/1008).
    Garbage JSON inside a valid frame only earns an ``error`` frame.

Slow consumers (docs/reliability.md #4)
    A client whose outbox would exceed ``max_outbox_bytes`` is dropped at once: queued frames are
    discarded, it gets ``reconnect`` and a close frame (best effort, for a short while), and it is removed
    from every channel. Nobody else waits for it.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError

from playtotv.keys import user_channel
from playtotv.protocol.push import Answer, Reconnect, Subscribe, Unsubscribe, encode_frame
from playtotv.protocol.push import Ping as PingFrame
from playtotv.protocol.push import Pong as PongFrame
from playtotv.settings import PushSettings
from playtotv.store.base import StoreUnavailable

from . import wsframe
from .access import EpisodeDirectory, may_follow
from .answers import AnswerDesk
from .clientframes import BadFrame, MalformedSince, decode, error_frame
from .hub import ChannelUnavailable, Hub
from .outbox import Outbox

#: Bytes asked of the kernel per read; client frames are small, so one read usually holds several.
RECEIVE_BYTES = 4096
#: After we send a close frame, the client has this long to answer with its own before we hang up.
CLOSE_HANDSHAKE_SECONDS = 2.0
#: A dropped slow client gets this long to take its ``reconnect`` and close frames.
FAREWELL_SECONDS = 1.0
#: Channels one connection may follow (its user channel included): bounds what one ticket can cost.
MAX_CHANNELS_PER_CONNECTION = 32
#: A client sent away (too slow, broker unavailable) is told to come back after a random delay up to
#: this, so a burst of drops does not return as a burst.
RECONNECT_AFTER_MAX = 2.0

#: Close reasons are for humans; a control frame holds 125 bytes in all.
MAX_CLOSE_REASON_CHARS = 100

_PING_FRAME = wsframe.ping(b"ka")


@dataclass
class ConnectionServices:
    """What every connection of a node shares (one instance per node)."""

    hub: Hub
    settings: PushSettings
    #: Which episode channels exist (a made-up one is ``not_found``).
    directory: EpisodeDirectory
    #: Called once per client dropped for being too slow (the metrics counter).
    on_dropped_slow: Callable[[], None] = lambda: None
    #: Answers sent on the socket; None: refused ``unavailable`` (a node built without one).
    answers: AnswerDesk | None = None


class WsConnection:
    __slots__ = (
        "services", "stream", "ws", "user_id", "outbox", "channels", "last_heard", "last_ping",
        "_closing", "_done", "_dropped", "_read_scope", "_close_deadline", "_parts", "_parts_bytes", "_fd",
    )

    def __init__(self, services: ConnectionServices, stream: trio.SocketStream, ws: Connection,
                 user_id: str) -> None:
        self.services = services
        self.stream = stream
        self.ws = ws
        self.user_id = user_id
        self._fd = stream.socket.fileno()
        self.outbox = Outbox(self._fd, services.settings.max_outbox_bytes)
        self.channels: set[str] = set()
        self.last_heard = trio.current_time()
        self.last_ping = self.last_heard
        self._closing = False  # our close frame is sent (or the client's answered): no more data frames
        self._done = False  # stop reading
        self._dropped = False
        self._read_scope: trio.CancelScope | None = None
        self._close_deadline = 0.0
        self._parts: list[str | bytes | bytearray] = []
        self._parts_bytes = 0

    # -- the hub's side (synchronous, never raises) ------------------------------------------------------
    def send_raw(self, ws_frame: bytes) -> None:
        if self._closing or self._dropped:
            return
        if not self.outbox.write(ws_frame):
            self._write_refused()

    def send_json(self, payload: bytes) -> None:
        self.send_raw(wsframe.text(payload))

    def send_ping(self, now: float) -> None:
        """Keepalive (the node's sweeper calls this for quiet clients)."""
        self.last_ping = now
        self.send_raw(_PING_FRAME)

    def _write_refused(self) -> None:
        if self.outbox.broken:
            self._stop_reading()  # the peer is gone: end the connection now rather than at its next read
            return
        self._dropped = True
        self.services.on_dropped_slow()
        # Not unsubscribed here: we are inside the hub's fan-out loop. ``send_raw`` ignores everything
        # from now on, and ``serve`` leaves the channels once the reader has stopped.
        self.outbox.truncate_to_partial_frame()
        self.outbox.write(wsframe.text(encode_frame(Reconnect(after=_reconnect_after()))), force=True)
        self.outbox.write(wsframe.close(wsframe.CLOSE_TRY_AGAIN_LATER, "too slow"), force=True)
        self._stop_reading()

    def _stop_reading(self) -> None:
        self._done = True
        if self._read_scope is not None:
            self._read_scope.cancel()

    # -- closing ---------------------------------------------------------------------------------------
    def drain(self, after: float) -> None:
        """The node is draining: tell the client to reconnect after ``after`` seconds, then close."""
        self.send_json(encode_frame(Reconnect(after=after)))
        self.begin_close(wsframe.CLOSE_GOING_AWAY, "server draining")

    def begin_close(self, code: int, reason: str) -> None:
        """Send our close frame and wait (a bounded while) for the client's."""
        if self._closing or self._dropped:
            return
        self.services.hub.unsubscribe_all(self.channels, self)
        self._closing = True
        try:
            data = self.ws.send(CloseConnection(code=code, reason=reason[:MAX_CLOSE_REASON_CHARS]))
        except LocalProtocolError:
            data = b""  # wsproto already considers the connection closed
        self.outbox.write(data, force=True)
        self._close_deadline = trio.current_time() + CLOSE_HANDSHAKE_SECONDS
        if self._read_scope is not None:
            self._read_scope.deadline = min(self._read_scope.deadline, self._close_deadline)

    # -- the connection's own task ---------------------------------------------------------------------
    async def serve(self) -> None:
        """Run the connection until the client leaves, is closed or dropped; release everything."""
        hub = self.services.hub
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.outbox.drain_forever)
                await self._subscribe(user_channel(self.user_id), None, None, malformed=False, auto=True)
                await self._read_loop()
                nursery.cancel_scope.cancel()
            hub.unsubscribe_all(self.channels, self)
            with trio.move_on_after(FAREWELL_SECONDS if self._dropped else CLOSE_HANDSHAKE_SECONDS):
                await self.outbox.flush()
        finally:
            hub.unsubscribe_all(self.channels, self)
            self.channels.clear()

    def _deadline(self) -> float:
        if self._closing:
            return self._close_deadline
        return self.last_heard + self.services.settings.idle_timeout

    async def _read_loop(self) -> None:
        # One cancel scope for all the reads until a deadline passes, its deadline moved on as frames are
        # heard (``_receive``): a scope per read was 6 of the 15 objects a parked read keeps, and the
        # young garbage collections walk every one of them (see ``_read_some``).
        while not self._done:
            with trio.CancelScope(deadline=self._deadline()) as scope:
                self._read_scope = scope
                while not self._done:
                    data = await self._read_some()
                    if not data:
                        self._done = True  # the client closed TCP (or reset it)
                        break
                    await self._receive(data)
            self._read_scope = None
            if not scope.cancelled_caught or self._done or self._closing:
                return  # done, dropped, or the close handshake timed out
            self.begin_close(wsframe.CLOSE_GOING_AWAY, "idle timeout")

    async def _read_some(self) -> bytes:
        """What the client sent next, or b"" at its end (closed, reset, or the socket closed under us):
        one non-blocking read, and ``wait_readable`` on the descriptor only when it had nothing, as trio
        does it.

        ``SocketStream.receive_some`` does the same through three more coroutines, a context manager and
        a caught BlockingIOError per wait. A wait's objects are all new, and the young garbage collections
        walk them (bench overload: young collections of 13k-24k objects, 50-250 ms at a 0.1 CPU quota,
        many of them read waits of connections that had just heard a pong). Measured on 1,000 parked
        socket pairs: 20 tracked objects per read wait through the stream with a cancel scope, 15 here
        with one, 9 here without (hence one scope across reads in ``_read_loop``)."""
        fd = self._fd
        try:
            data = os.read(fd, RECEIVE_BYTES)
        except BlockingIOError:
            pass
        except OSError:
            return b""
        else:
            # Data was there at once: let the other tasks run, but never lose what was read to a cancel.
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        while True:
            try:
                await trio.lowlevel.wait_readable(fd)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return b""
            try:
                return os.read(fd, RECEIVE_BYTES)
            except BlockingIOError:
                continue  # a spurious wake-up: wait again
            except OSError:
                return b""

    async def _receive(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events():
            # wsproto hands out a message's payload as it arrives: only a finished message counts as
            # heard, or a client trickling one endless frame would never be idle.
            if not isinstance(event, (TextMessage, BytesMessage)) or event.message_finished:
                self.last_heard = trio.current_time()
                if self._read_scope is not None:  # moved before any await: a slow subscribe is not idle
                    self._read_scope.deadline = self._deadline()
            match event:
                case TextMessage() | BytesMessage():
                    await self._on_message_part(event.data, event.message_finished)
                case Ping():
                    self.send_raw(wsframe.pong(event.payload))
                case Pong():
                    pass  # hearing it is the point (last_heard)
                case CloseConnection():
                    self._on_close(event)
            if self._done:
                return

    def _on_close(self, event: CloseConnection) -> None:
        state = self.ws.state
        if state is ConnectionState.REMOTE_CLOSING and not self._closing:
            # The client closes: answer its close frame.
            self.services.hub.unsubscribe_all(self.channels, self)
            self._closing = True
            self.outbox.write(self.ws.send(event.response()), force=True)
        elif state is ConnectionState.OPEN:
            # wsproto reports a frame it could not parse this way: tell the client why, and hang up.
            self.begin_close(event.code, event.reason or "")
        self._done = True  # in every case, nothing more worth reading

    async def _on_message_part(self, data: str | bytes | bytearray, finished: bool) -> None:
        size = len(data.encode()) if isinstance(data, str) else len(data)
        self._parts_bytes += size
        if self._parts_bytes > self.services.settings.max_frame_bytes:
            self._parts, self._parts_bytes = [], 0
            self.begin_close(wsframe.CLOSE_TOO_BIG, "message too big")
            self._done = True
            return
        self._parts.append(data)
        if not finished:
            return
        parts, self._parts, self._parts_bytes = self._parts, [], 0
        if len(parts) == 1:
            raw = parts[0]
        else:  # one message is all text or all bytes (its first frame's opcode decides)
            raw = "".join(parts) if isinstance(parts[0], str) else b"".join(parts)  # type: ignore[arg-type]  # one message's parts are all str or all bytes
        if self._closing:
            return  # the close handshake is under way: requests are no longer served
        await self._on_client_frame(raw)

    async def _on_client_frame(self, raw: str | bytes | bytearray) -> None:
        match decode(raw):
            case Subscribe(channel=channel, since=since):
                await self._subscribe(channel, since.epoch if since else None,
                                      since.offset if since else None, malformed=False)
            case MalformedSince(channel=channel):
                await self._subscribe(channel, None, None, malformed=True)
            case Unsubscribe(channel=channel):
                self.services.hub.unsubscribe(channel, self)
                self.channels.discard(channel)
            case PingFrame():
                self.send_json(encode_frame(PongFrame(server_time=time.time())))
            case Answer() as answer:
                # Awaited here: a client's frames are served in order, and the batcher coalesces the
                # answers of every connection waiting meanwhile into one broker call.
                desk = self.services.answers
                if desk is None:
                    self.send_json(error_frame("unavailable", "answers are not taken on this node", answer.id))
                else:
                    self.send_json(await desk.answer(self.user_id, answer))
            case BadFrame(code=code, message=message, id=request_id):
                self.send_json(error_frame(code, message, request_id))

    async def _subscribe(self, channel: str, since_epoch: str | None, since_offset: int | None, *,
                         malformed: bool, auto: bool = False) -> None:
        if not may_follow(self.user_id, channel):
            self.send_json(error_frame("forbidden", f"not allowed to follow {channel}"))
            return
        if channel not in self.channels and len(self.channels) >= MAX_CHANNELS_PER_CONNECTION:
            self.send_json(error_frame("bad_request", f"at most {MAX_CHANNELS_PER_CONNECTION} channels"))
            return
        try:
            if not await self.services.directory.exists(channel):
                self.send_json(error_frame("not_found", f"no such channel {channel}"))
                return
        except StoreUnavailable as e:
            self.send_json(error_frame("unavailable", f"cannot follow {channel} now: {e}"))
            return
        self.channels.discard(channel)
        try:
            await self.services.hub.subscribe(channel, self, since_epoch, since_offset, malformed=malformed)
        except ChannelUnavailable as e:
            self.send_json(error_frame("unavailable", f"cannot follow {channel} now: {e}"))
            if auto:
                # Without its own channel the client would miss its scores silently: send it elsewhere.
                self.send_json(encode_frame(Reconnect(after=_reconnect_after())))
                self.begin_close(wsframe.CLOSE_TRY_AGAIN_LATER, "broker unavailable")
            return
        if self._closing or self._dropped:
            self.services.hub.unsubscribe(channel, self)  # closed while we waited for the broker
            return
        self.channels.add(channel)


def _reconnect_after() -> float:
    return round(random.uniform(0, RECONNECT_AFTER_MAX), 3)
