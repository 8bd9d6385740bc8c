"""Redis connections the broker owns itself, outside coredis's connection pool.

The pool multiplexes non-blocking commands over shared connections and hands each one back before its
reply arrives, so a cancelled or failed call costs the pool nothing. A command that holds its connection
until the reply (a blocking command, a MULTI pipeline) is different: when it is cancelled or the
connection breaks, coredis rightly invalidates the connection, but (coredis 6.9) the pool never gets
that slot back, and after ``max_connections`` such losses every later call waits forever for a
connection. The broker therefore sends only non-blocking single commands (scripts included) through
the pool, and runs blocking commands (XREADGROUP BLOCK, WAIT) and subscriptions on connections from here.
"""

from __future__ import annotations

import weakref
from typing import Any

import trio
from coredis.connection import BaseConnection
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.exceptions import SentinelError
from coredis.typing import ResponseType

from ..redis_client import RedisEndpoint
from .base import BrokerUnavailable

#: Idle connections kept for blocking commands: enough for the waiting claims of a busy worker node;
#: more are opened on demand and closed after use.
MAX_IDLE_BLOCKING_CONNECTIONS = 16


class DedicatedConnections:
    def __init__(self, endpoint: RedisEndpoint, nursery: trio.Nursery) -> None:
        self._endpoint = endpoint
        self._nursery = nursery
        self._idle: list[BaseConnection] = []
        #: Every connection made here and still referenced, so a failover can invalidate them all.
        self._made: weakref.WeakSet[BaseConnection] = weakref.WeakSet()
        endpoint.on_primary_lost(self.drop_all)

    async def open(self) -> BaseConnection:
        """A new connection, running in the broker's nursery until invalidated or the broker closes."""
        try:
            # SentinelError: no Sentinel knows a primary, or the node named is not one (any more).
            connection = await self._endpoint.new_connection()
            await self._nursery.start(connection.run)
        except (RedisConnectionError, TimeoutError, SentinelError) as exc:
            # coredis reports a cancellation during the handshake as a ConnectionError (6.9): let the
            # cancellation win, or the caller's cancel scope would see an outage instead.
            await trio.lowlevel.checkpoint_if_cancelled()
            raise BrokerUnavailable(f"redis: {exc}") from exc
        self._made.add(connection)
        return connection

    def drop_all(self) -> None:
        """The primary changed: no connection made so far may serve another command."""
        self._idle.clear()
        for connection in list(self._made):
            connection.invalidate("redis primary changed")

    async def execute_blocking(self, timeout: float, command: bytes, *args: Any) -> ResponseType:
        """Run a blocking command on a connection of its own, reused only if the command completed.

        ``timeout`` bounds the wait for the reply (the command's own block time plus a margin); past
        it the connection is dropped and TimeoutError raised.
        """
        connection = self._take_idle() or await self.open()
        try:
            reply = await connection.create_request(
                command, *args, timeout=timeout, disconnect_on_cancellation=True
            )
        except BaseException:
            # Cancelled, timed out or failed: a reply may still be on its way, so the connection's
            # state is unknown and it must never serve another command.
            connection.invalidate("blocking command did not complete")
            raise
        self._give_back(connection)
        return reply

    async def execute_replicated(
        self, timeout: float, replicas: int, replica_timeout: float, command: bytes, *args: Any
    ) -> tuple[ResponseType, int]:
        """Run a write command, then WAIT for ``replicas`` replicas to hold it: ``(reply, confirmed)``.

        Both go out together (one round trip plus the replication delay). WAIT blocks its connection and
        counts the writes made on that same connection, so neither may share a pooled connection.
        """
        connection = self._take_idle() or await self.open()
        try:
            reply = connection.create_request(
                command, *args, timeout=timeout, disconnect_on_cancellation=True
            )
            confirmed = connection.create_request(
                b"WAIT", replicas, max(1, round(replica_timeout * 1000)),
                timeout=timeout + replica_timeout, disconnect_on_cancellation=True,
            )
            result = await reply, int(await confirmed)  # type: ignore[arg-type]  # WAIT's reply is an integer
        except BaseException:
            connection.invalidate("replicated write did not complete")
            raise
        self._give_back(connection)
        return result

    def _take_idle(self) -> BaseConnection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.usable:
                return connection
        return None

    def _give_back(self, connection: BaseConnection) -> None:
        if connection.usable and len(self._idle) < MAX_IDLE_BLOCKING_CONNECTIONS:
            self._idle.append(connection)
        else:
            connection.invalidate("not needed")
