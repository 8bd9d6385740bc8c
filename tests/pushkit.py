"""Helpers for the push tests: a push role in the test's own trio loop, and small clients.

``push_node`` builds a NodeContext around test backends (memory registry, in-memory SQLite store, the
broker the test gives or a MemoryBroker) and starts the push role as the node does
(``tests/inprocess.py``). Push lets clients follow only channels of episodes that exist: the store holds
episodes ``E1`` and ``E2`` (the channels the tests follow) unless the test names others. Clients are
trio-websocket (the project's client library) or, where a test needs to misbehave on the wire, raw
sockets driven with wsproto.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator

import msgspec
import trio
from trio_websocket import WebSocketConnection, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

from playtotv.broker.memory import MemoryBroker
from playtotv.gameplay import schema
from playtotv.gameplay.documents import EpisodeDoc, to_doc
from playtotv.context import NodeContext
from playtotv.protocol.push import encode_frame
from playtotv.registry.memory import MemoryRegistry
from playtotv.store import open_store
from tests.inprocess import make_settings, node_context, start_roles

SECRET = "push-test-secret-0123456789"
#: Episodes in a test push node's store: ``episode:E1`` and ``episode:E2`` can be followed.
EPISODES = ("E1", "E2")


@dataclass
class PushNode:
    ctx: NodeContext
    runtime: Any  # roles.push.PushRuntime

    @property
    def broker(self) -> Any:
        return self.ctx.broker

    def ticket(self, user_id: str) -> str:
        token, _ = self.ctx.tickets.issue(user_id, ttl=600)
        return token

    def ws_url(self, user_id: str) -> str:
        return f"{self.ctx.endpoints['push_ws']}?ticket={self.ticket(user_id)}"

    def poll_url(self) -> str:
        return self.ctx.endpoints["push_poll"]

    @property
    def hub(self) -> Any:
        return self.runtime.hub

    async def publish(self, channel: str, data: dict[str, Any]) -> Any:
        return await self.ctx.broker.publish(channel, msgspec.json.encode(data))


@asynccontextmanager
async def push_node(broker: Any = None, *, episodes: tuple[str, ...] = EPISODES,
                    **overrides: str) -> AsyncIterator[PushNode]:
    """A running push role; ``overrides`` like make_settings (``push_idle_timeout="0.5"``)."""
    settings = make_settings(**overrides)
    async with open_store("sqlite:///:memory:") as store:
        for episode_id in episodes:
            await add_episode(store, episode_id)
        ctx = node_context(settings, ["push"], broker=broker or MemoryBroker(), registry=MemoryRegistry(),
                           store=store, secret=SECRET, node_id="push-test")
        async with trio.open_nursery() as nursery:
            await start_roles(nursery, ctx)
            yield PushNode(ctx, ctx.push)
            nursery.cancel_scope.cancel()


async def add_episode(store: Any, episode_id: str) -> None:
    """Put an episode straight into the store, so that push lets clients follow ``episode:<id>``."""
    await store.insert(schema.EPISODES, to_doc(EpisodeDoc(id=episode_id, show_id="S", title=episode_id, mode="live")))


# -- trio-websocket clients -------------------------------------------------------------------------------

_decoder = msgspec.json.Decoder()


async def recv(ws: WebSocketConnection) -> dict[str, Any]:
    return _decoder.decode(await ws.get_message())


async def send(ws: WebSocketConnection, frame: Any) -> None:
    await ws.send_message(encode_frame(frame).decode() if not isinstance(frame, (str, bytes)) else frame)


@asynccontextmanager
async def client(node: PushNode, user_id: str = "u1") -> AsyncIterator[WebSocketConnection]:
    """A connected client whose automatic ``subscribed`` (its user channel) was already read."""
    async with open_websocket_url(node.ws_url(user_id)) as ws:
        first = await recv(ws)
        assert first["type"] == "subscribed" and first["channel"] == f"user:{user_id}", first
        yield ws


async def subscribe(ws: WebSocketConnection, channel: str, since: dict[str, Any] | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "subscribe", "channel": channel}
    if since is not None:
        frame["since"] = since
    await ws.send_message(msgspec.json.encode(frame).decode())
    reply = await recv(ws)
    assert reply["type"] == "subscribed" and reply["channel"] == channel, reply
    return reply


# -- raw clients (misbehaving on purpose) ---------------------------------------------------------------------

class BareWebSocket:
    """A WebSocket client on a bare socket: it answers nothing unless told, reads only when asked."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws

    @classmethod
    async def connect(cls, node: PushNode, user_id: str = "raw", *, rcvbuf: int | None = None) -> "BareWebSocket":
        host, port = _host_port(node.ctx.endpoints["push_ws"])
        sock = trio.socket.socket()
        if rcvbuf is not None:
            import socket as stdlib_socket

            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, rcvbuf)
        await sock.connect((host, port))
        stream = trio.SocketStream(sock)
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host=f"{host}:{port}", target=f"/v1/ws?ticket={node.ticket(user_id)}")))
        client = cls(stream, ws)
        while True:
            events = await client._events()
            if any(isinstance(e, AcceptConnection) for e in events):
                return client

    async def _events(self) -> list[Any]:
        data = await self.stream.receive_some(65536)
        self.ws.receive_data(data or None)
        return list(self.ws.events())

    async def events(self) -> list[Any]:
        """The events of the next read (a CloseConnection with code 1006 when the server hung up)."""
        return await self._events()

    async def aclose(self) -> None:
        await self.stream.aclose()


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port
