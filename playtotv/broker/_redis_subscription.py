"""A Redis pub/sub subscription: one connection of its own, channels added and removed while it runs.

A relay task (in the broker's nursery) reads the connection and delivers into a ``SubscriberInbox``;
the subscriber iterates the inbox in its own task, so an error or a slow subscriber never blocks the
reader and a reader problem surfaces where the subscriber is. When the connection is lost the relay
reconnects with back-off, subscribes every channel again and, once Redis has confirmed them all, yields a
``SubscriptionReset``: a subscriber that then reads history cannot miss what is published afterwards.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import cast

import trio
from coredis.connection import BaseConnection
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.typing import ResponseType

from .. import keys
from ._inbox import SubscriberInbox, SubscriptionItem
from .base import BrokerUnavailable, ChannelMessage, SubscriptionReset

logger = logging.getLogger(__name__)

#: How long Redis may take to confirm SUBSCRIBE (on connect, or for ``add``) before we call it unavailable.
SUBSCRIBE_ACK_TIMEOUT = 2.0
#: Reconnect back-off: the first retry comes soon (a restart takes ~100 ms), then the delay doubles up to
#: the cap so that a long outage costs little; jitter keeps many nodes from reconnecting in lock step.
RECONNECT_DELAY_MIN = 0.05
RECONNECT_DELAY_MAX = 2.0
#: A connection whose peer vanished without a reset (a network partition, a frozen host) stays silent
#: forever; a periodic PING finds out. RESP3 allows commands on a subscribed connection.
KEEPALIVE_INTERVAL = 10.0
KEEPALIVE_TIMEOUT = 5.0

ConnectionFactory = Callable[[], Awaitable[BaseConnection]]


def decode_envelope(channel: str, payload: bytes) -> ChannelMessage:
    """Parse what ``lua/publish.lua`` sends: ``epoch \\n offset \\n sent_at \\n data``."""
    epoch, offset, sent_at, data = payload.split(b"\n", 3)
    return ChannelMessage(channel, epoch.decode(), int(offset), float(sent_at), data)


class RedisSubscription:
    def __init__(self, connect: ConnectionFactory, channels: Sequence[str], buffer_size: int) -> None:
        self._connect = connect
        self._wanted: dict[bytes, str] = {_pubsub_key(name): name for name in channels}
        self._inbox = SubscriberInbox(buffer_size, lambda: sorted(self._wanted.values()))
        self._connection: BaseConnection | None = None
        self._live = False  # the connection is up and has been asked for every wanted channel
        self._acked: set[bytes] = set()  # channels Redis confirmed on the current connection
        self._ack_arrived = trio.lowlevel.ParkingLot()
        self._cancel_scope = trio.CancelScope()

    # -- the subscriber's side -----------------------------------------------------------------------------
    async def add(self, channels: Sequence[str]) -> None:
        """Subscribe to ``channels`` and return once Redis confirmed them.

        Raises BrokerUnavailable when that takes longer than SUBSCRIBE_ACK_TIMEOUT; the channels stay
        wanted then, are subscribed when the connection is back and announced by a SubscriptionReset.
        """
        await trio.lowlevel.checkpoint()
        requested = {_pubsub_key(name): name for name in channels}
        new = {key: name for key, name in requested.items() if key not in self._wanted}
        self._wanted.update(new)
        if new and self._live:
            self._send(b"SUBSCRIBE", *new)
        with trio.move_on_after(SUBSCRIBE_ACK_TIMEOUT):
            while not requested.keys() <= self._acked:
                await self._ack_arrived.park()
            return
        raise BrokerUnavailable("redis did not confirm the subscription in time")

    async def remove(self, channels: Sequence[str]) -> None:
        await trio.lowlevel.checkpoint()
        gone = [key for key in map(_pubsub_key, channels) if key in self._wanted]
        for key in gone:
            del self._wanted[key]
            self._acked.discard(key)
        if gone and self._live:
            self._send(b"UNSUBSCRIBE", *gone)

    def __aiter__(self) -> AsyncIterator[SubscriptionItem]:
        return self

    async def __anext__(self) -> SubscriptionItem:
        return await self._inbox.receive()

    def close(self) -> None:
        self._cancel_scope.cancel()
        self._drop_connection()
        self._inbox.close()

    # -- the relay task ------------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect and subscribe (raising BrokerUnavailable to the starter if that fails), then relay
        until closed. A failure after start ends the subscription with that error in the subscriber."""
        started = False
        try:
            with self._cancel_scope:
                pushes, early = await self._establish()
                task_status.started()
                started = True
                self._deliver_all(early)
                while True:
                    await self._relay(pushes)
                    pushes, early = await self._reestablish()
                    self._inbox.deliver(SubscriptionReset(channels=sorted(self._wanted.values())))
                    self._deliver_all(early)
        except Exception as exc:  # trio.Cancelled is a BaseException and passes through
            if not started:
                raise
            logger.exception("redis subscription failed")
            self._inbox.fail(exc)
        finally:
            self._drop_connection()
            self._inbox.close()

    async def _establish(self) -> tuple[AsyncIterator[list[ResponseType]], list[ChannelMessage]]:
        """A new connection subscribed to every wanted channel, and the messages that arrived meanwhile."""
        self._drop_connection()
        self._connection = connection = await self._connect()
        early: list[ChannelMessage] = []
        requested: set[bytes] = set()
        try:
            pushes = connection.push_messages
            with trio.fail_after(SUBSCRIBE_ACK_TIMEOUT):
                # ``add`` may want more channels while we wait: loop until everything wanted is confirmed.
                while True:
                    missing = self._wanted.keys() - requested
                    if missing:
                        connection.send_command(b"SUBSCRIBE", *missing)
                        requested |= missing
                    if self._wanted.keys() <= self._acked:
                        break
                    message = self._handle(await pushes.__anext__())
                    if message is not None:
                        early.append(message)
        except (RedisConnectionError, trio.TooSlowError) as exc:
            self._drop_connection()
            raise BrokerUnavailable(f"redis pub/sub: {exc}") from exc
        self._live = True
        return pushes, early

    async def _reestablish(self) -> tuple[AsyncIterator[list[ResponseType]], list[ChannelMessage]]:
        logger.warning("redis pub/sub connection lost; reconnecting")
        delay = RECONNECT_DELAY_MIN
        while True:
            try:
                established = await self._establish()
            except BrokerUnavailable:
                await trio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, RECONNECT_DELAY_MAX)
                continue
            logger.warning("redis pub/sub connection re-established")
            return established

    async def _relay(self, pushes: AsyncIterator[list[ResponseType]]) -> None:
        """Deliver messages until the connection is lost."""
        assert self._connection is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep_alive, self._connection)
            try:
                async for push in pushes:
                    message = self._handle(push)
                    if message is not None:
                        self._inbox.deliver(message)
            except RedisConnectionError:
                pass
            nursery.cancel_scope.cancel()
        self._drop_connection()

    async def _keep_alive(self, connection: BaseConnection) -> None:
        while True:
            await trio.sleep(KEEPALIVE_INTERVAL)
            try:
                await connection.create_request(b"PING", timeout=KEEPALIVE_TIMEOUT)
            except (RedisConnectionError, TimeoutError):
                connection.invalidate("pub/sub keepalive failed")  # ends the relay's read loop
                return

    def _handle(self, push: list[ResponseType]) -> ChannelMessage | None:
        # A pub/sub push is [kind, channel key, payload], all bytes (coredis types any reply).
        kind, key = push[0], cast(bytes, push[1])
        if kind == b"message":
            channel = self._wanted.get(key)
            if channel is None:
                return None  # unsubscribed while the message was under way
            try:
                return decode_envelope(channel, cast(bytes, push[2]))
            except ValueError:
                logger.warning("dropped a malformed message on %r (not published by a broker)", channel)
                return None
        if kind == b"subscribe" and key in self._wanted:
            self._acked.add(key)
            self._ack_arrived.unpark_all()
        return None

    def _deliver_all(self, messages: list[ChannelMessage]) -> None:
        for message in messages:
            self._inbox.deliver(message)

    def _send(self, command: bytes, *args: bytes) -> None:
        if self._connection is None:
            return  # between connections: establishing the next one subscribes every wanted channel
        try:
            self._connection.send_command(command, *args)
        except RedisConnectionError:
            pass  # the connection is going; re-establishing it subscribes every wanted channel

    def _drop_connection(self) -> None:
        if self._connection is not None:
            self._connection.invalidate("pub/sub connection dropped")
        self._connection = None
        self._live = False
        self._acked = set()
        self._ack_arrived.unpark_all()


def _pubsub_key(channel: str) -> bytes:
    return keys.channel_pubsub(channel).encode()
