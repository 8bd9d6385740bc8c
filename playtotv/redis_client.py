"""The one place Redis clients are made, for the broker and the registry: plain URLs and Sentinel URLs.

``redis.url`` forms:

    redis://[user:password@]host:port/db        rediss://...   unix:///path/to/socket?db=0
    redis+sentinel://[user:password@]h1:26379,h2:26379,h3:26379/SERVICE_NAME/DB

With Sentinel the client resolves the primary through the Sentinels (coredis ``Sentinel.primary_for``)
whenever it opens a connection, and follows a failover three ways, because a demoted primary can stay up
and keep accepting writes for seconds (Sentinel reconfigures it late; writes made there meanwhile are
lost when it resynchronises):

1. a watcher asks the Sentinels every ``PRIMARY_CHECK_INTERVAL`` where the primary is; when that is not
   where the pool connects, every connection is dropped and the next call connects to the new primary;
2. a reply that only a demoted or fenced primary gives (``READONLY``, ``NOREPLICAS``, ``UNBLOCKED``, a
   connection whose ``ROLE`` check failed) does the same at once (``is_failover_error``);
3. listeners (the broker's pub/sub and blocking connections) are told, so subscriptions reconnect to the
   new primary and resubscribe.

A credential in the URL is used for the data nodes only; Sentinels are reached without one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import coredis
import trio
from coredis.connection import BaseConnection, TCPLocation
from coredis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from coredis.exceptions import (
    PrimaryNotFoundError,
    ReadOnlyError,
    ResponseError,
    StalePrimaryError,
    UnblockedError,
)
from coredis.retry import NoRetryPolicy

log = logging.getLogger("playtotv.redis")

SENTINEL_SCHEME = "redis+sentinel"
#: Every scheme ``redis.url`` accepts.
SCHEMES = ("redis", "rediss", "unix", SENTINEL_SCHEME)
DEFAULT_SENTINEL_PORT = 26379
#: How often the watcher asks the Sentinels where the primary is. It bounds how long a node may keep
#: writing to a demoted primary that still accepts writes (those writes are lost): half a second of
#: writes at most, for two cheap commands a second per client.
PRIMARY_CHECK_INTERVAL = 0.5
#: Error replies (first word) that a primary gives only once it has been demoted or cut off from its
#: replicas: reconnecting through the Sentinels is the cure, retrying on the same connection is not.
FAILOVER_REPLIES = ("READONLY", "NOREPLICAS", "MASTERDOWN", "UNBLOCKED")
#: After dropping every connection, further failover replies within this long are echoes of the same
#: event (commands sent before the drop, answered after it): acting on each would drop the fresh
#: connections too, again and again, during a burst of calls.
PRIMARY_LOST_DEBOUNCE = 0.25


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def is_redis_url(url: str) -> bool:
    return urlsplit(url).scheme in SCHEMES


def parse_sentinel_url(url: str) -> SentinelUrl:
    """``redis+sentinel://[user:pw@]h1:26379,h2/mymaster/0`` → its parts; ValueError naming the problem."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, _, secret = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    sentinels = tuple(_host_port(h) for h in hosts.split(",") if h)
    if not sentinels:
        raise ValueError("no Sentinel address (expected redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE/DB)")
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError("expected /SERVICE_NAME or /SERVICE_NAME/DB after the Sentinel addresses")
    try:
        db = int(path[1]) if len(path) == 2 else 0
    except ValueError:
        raise ValueError(f"database {path[1]!r} is not a number") from None
    return SentinelUrl(sentinels, unquote(path[0]), db, username, password)


def _host_port(text: str) -> tuple[str, int]:
    if text.startswith("["):  # [::1]:26379
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = text.partition(":")
    try:
        port = int(port_text) if port_text else DEFAULT_SENTINEL_PORT
    except ValueError:
        raise ValueError(f"Sentinel address {text!r}: port is not a number") from None
    if not host or not 0 < port < 65536:
        raise ValueError(f"Sentinel address {text!r} is not HOST:PORT")
    return host, port


def is_failover_error(exc: BaseException) -> bool:
    """True for errors that mean "this connection reaches a node that is no longer the primary"."""
    if isinstance(exc, (ReadOnlyError, StalePrimaryError, UnblockedError)):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(FAILOVER_REPLIES)


class RedisEndpoint:
    """A coredis client of the (current) primary, and the means to follow it through failovers.

    ``client`` runs ordinary commands through coredis's pool. ``new_connection`` makes a connection of
    one's own (not yet started: ``await nursery.start(connection.run)``) to wherever the primary is now.
    ``primary_lost`` drops every pooled connection and tells the listeners registered with
    ``on_primary_lost`` to drop theirs."""

    def __init__(self, client: coredis.Redis[Any], *, sentinel: bool) -> None:
        self.client = client
        self.sentinel = sentinel
        self._listeners: list[Callable[[], None]] = []
        self._last_lost = -PRIMARY_LOST_DEBOUNCE
        #: How often the connections were dropped for a failover (tests and logs read it).
        self.failovers_seen = 0

    def on_primary_lost(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def primary_lost(self, reason: str, *, certain: bool = False) -> None:
        """Drop every connection; ``certain`` (the Sentinels named another primary) skips the debounce."""
        now = trio.current_time()
        if not certain and now - self._last_lost < PRIMARY_LOST_DEBOUNCE:
            return
        self._last_lost = now
        self.failovers_seen += 1
        log.warning("redis primary lost (%s): reconnecting through %s", reason,
                    "the Sentinels" if self.sentinel else "its address")
        self.client.connection_pool.disconnect()
        for listener in list(self._listeners):
            listener()

    async def new_connection(self) -> BaseConnection:
        """A fresh connection to the current primary. The pool's own constructor does the resolving
        (asking the Sentinels, for a Sentinel pool); coredis 6.9 has no public call for a connection
        outside the pool, which the broker needs for blocking commands and subscriptions."""
        pool = self.client.connection_pool
        return await pool._construct_connection()


@asynccontextmanager
async def open_redis(url: str, *, connect_timeout: float, stream_timeout: float) -> AsyncIterator[RedisEndpoint]:
    """A client for ``url``, entered (connections are opened lazily: a Redis or Sentinel that is down now
    is reported by the first call). coredis never retries a command on its own here: a retried publish or
    INCR could apply twice, so callers decide what is safe to repeat."""
    options: dict[str, Any] = {
        "connect_timeout": connect_timeout, "stream_timeout": stream_timeout, "retry_policy": NoRetryPolicy(),
    }
    if urlsplit(url).scheme != SENTINEL_SCHEME:
        async with coredis.Redis.from_url(url, **options) as client:
            yield RedisEndpoint(client, sentinel=False)
        return
    target = parse_sentinel_url(url)
    sentinel = coredis.Sentinel(
        [TCPLocation(host, port) for host, port in target.sentinels],
        sentinel_kwargs={"connect_timeout": connect_timeout, "stream_timeout": stream_timeout},
        **options,
    )
    credentials: dict[str, Any] = {k: v for k, v in (("username", target.username), ("password", target.password)) if v}
    async with sentinel:
        client = sentinel.primary_for(target.service, db=target.db, **credentials)
        async with client, trio.open_nursery() as nursery:
            endpoint = RedisEndpoint(client, sentinel=True)
            nursery.start_soon(_follow_primary, endpoint, sentinel, target.service)
            yield endpoint
            nursery.cancel_scope.cancel()


async def _follow_primary(endpoint: RedisEndpoint, sentinel: coredis.Sentinel[Any], service: str) -> None:
    """The watcher (module docstring, 1.): compare where the Sentinels say the primary is with where the
    pool connects. Before the pool's first connection there is nothing to compare."""
    pool = endpoint.client.connection_pool
    while True:
        await trio.sleep(PRIMARY_CHECK_INTERVAL)
        try:
            host, port = await sentinel.discover_primary(service)
        except (PrimaryNotFoundError, RedisConnectionError, TimeoutError):
            # No Sentinel answers: nothing to learn now; calls fail (or not) on their own.
            await trio.lowlevel.checkpoint_if_cancelled()
            continue
        current = pool.location
        # A Sentinel names a host and port: the pool's location is always a TCP one.
        if isinstance(current, TCPLocation) and (current.host, current.port) != (host, port):
            pool.location = TCPLocation(host, port)
            endpoint.primary_lost(f"Sentinels name {host}:{port}, connected to {current.host}:{current.port}",
                                  certain=True)
