"""A synthetic audience and a director, for the kill tests, ``bench failover`` and other tools that run
a show against a cluster the way real clients do.

A :class:`Viewer` joins through the gatekeeper with the SDK (``PlayToTVClient``: core stickiness and
failover, idempotent answers) and follows channels over WebSocket with the sans-io ``PushClient``: when
its push node goes away it moves to the next endpoint of its list (back to the gatekeeper when the list
is exhausted) and resubscribes with its last ``(epoch, offset)``, so missed messages are replayed. It
records what it received, how often it reconnected and how often the server could not fill a gap
(``recovered: false``), which is what the tests assert on and the benchmark reports.

A :class:`Director` calls the director API on any core that answers (a console fails over too).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from playtotv.client import ClientError, PlayToTVClient, Unavailable
from playtotv.pushclient import (
    ChannelPosition,
    MessageReceived,
    PushClient,
    ReconnectRequested,
    RemoteProtocolError,
    Resubscribe,
    StateLost,
    Subscribed,
)

#: Pause before reconnecting, jittered so a node's clients do not return in lock step (docs/reliability.md #3).
RECONNECT_DELAY = (0.05, 0.3)
#: Pause between answer attempts while no core accepts it (a Redis failover takes seconds).
ANSWER_RETRY_DELAY = 0.2
#: Bounds of a WebSocket handshake, and of its closing handshake (a dead node does not answer it).
CONNECT_TIMEOUT = 10.0
DISCONNECT_TIMEOUT = 1.0
#: Joins at once when gathering an audience: a ramp, not a stampede, on a small machine.
JOIN_CONCURRENCY = 25


@dataclass
class Received:
    epoch: str
    offset: int
    data: dict[str, Any]
    at: float  # trio.current_time() on arrival (delivery times in bench failover)


@dataclass
class Viewer:
    gatekeeper: str
    http: httpx.AsyncClient
    name: str = "viewer"
    client: PlayToTVClient = field(init=False)
    push: PushClient = field(init=False)
    received: dict[str, list[Received]] = field(default_factory=dict)
    #: ``recovered: false`` answers (or an epoch change): state the viewer would reload over REST.
    state_lost: int = 0
    reconnects: int = 0
    connected: trio.Event = field(default_factory=trio.Event)
    #: Set whenever every followed channel has been (re)subscribed on the current connection.
    in_sync: bool = False
    #: Why the last WebSocket ended (for reports and failing tests).
    last_disconnect: str = ""
    #: Why the last answer attempt failed (an error code or exception name).
    last_answer_error: str = ""
    _push_index: int = 0

    def __post_init__(self) -> None:
        self.client = PlayToTVClient(self.gatekeeper, name=self.name, http=self.http,
                                     transports=("websocket",))
        self.push = PushClient()

    async def join(self) -> None:
        await self.client.join()
        self.push.user_id = self.client.user_id

    def data_of(self, channel: str) -> list[dict[str, Any]]:
        return [r.data for r in self.received.get(channel, [])]

    # -- push ---------------------------------------------------------------------------------------------
    async def follow(self, channels: list[str], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                     ) -> None:
        """Follow ``channels`` forever, reconnecting as needed; reports started once first subscribed."""
        for channel in channels:
            self.push.channels.setdefault(channel, ChannelPosition())
        while True:
            try:
                async with open_websocket_url(self._push_url(), connect_timeout=CONNECT_TIMEOUT,
                                              disconnect_timeout=DISCONNECT_TIMEOUT) as ws:
                    await self._session(ws, channels, task_status)
            except (OSError, HandshakeError, ConnectionClosed, RemoteProtocolError) as e:
                # The node went away or never answered (HandshakeError covers a refused connection and
                # both handshake timeouts): try the next endpoint.
                self.last_disconnect = f"{type(e).__name__}: {e.__cause__ or e!r}"
            if self.connected.is_set():
                task_status = trio.TASK_STATUS_IGNORED  # started already, on an earlier connection
            self.in_sync = False
            self.reconnects += 1
            await self._next_endpoint()
            await trio.sleep(random.uniform(*RECONNECT_DELAY))

    def _push_url(self) -> str:
        assert self.client.session is not None, "join() first"
        endpoints = [p["websocket"] for p in self.client.session["push"] if p.get("websocket")]
        return f"{endpoints[self._push_index % len(endpoints)]}?ticket={self.client.ticket}"

    async def _next_endpoint(self) -> None:
        assert self.client.session is not None
        self._push_index += 1
        if self._push_index >= len(self.client.session["push"]):
            # Every endpoint of the list was tried: ask the gatekeeper for a fresh list (same identity).
            try:
                await self.client.join()
            except (ClientError, httpx.HTTPError):
                pass  # keep the old list and try again
            self._push_index = 0

    async def _session(self, ws: WebSocketConnection, channels: list[str], task_status: trio.TaskStatus[None]) -> None:
        for frame in self.push.connection_made():
            await ws.send_message(frame.decode())
        pending = set(channels)
        while True:
            raw = await ws.get_message()
            for event in self.push.receive(raw):
                match event:
                    case MessageReceived():
                        self.received.setdefault(event.channel, []).append(
                            Received(event.epoch, event.offset, json.loads(event.data), trio.current_time()))
                    case Resubscribe():
                        await ws.send_message(event.frame.decode())
                    case StateLost():
                        self.state_lost += 1
                        pending.discard(event.channel)
                    case Subscribed():
                        pending.discard(event.channel)
                    case ReconnectRequested():
                        await trio.sleep(event.after)
                        return
            if not pending and not self.in_sync:
                self.in_sync = True
                if not self.connected.is_set():
                    self.connected.set()
                    task_status.started()

    # -- answers ------------------------------------------------------------------------------------------
    async def answer(self, interaction_id: str, choice: str | int, *, give_up_after: float = 30.0) -> bool:
        """Answer until a core accepts it (202, or 409 already_answered on a retry); False when it was
        refused (closed interaction, ...) or nothing accepted it in time."""
        deadline = trio.current_time() + give_up_after
        attempted = False
        while trio.current_time() < deadline:
            try:
                await self.client.answer(interaction_id, choice)
                return True
            except ClientError as e:
                if e.code == "already_answered" and attempted:
                    return True  # an earlier attempt landed; the SDK's own retries said so too
                self.last_answer_error = e.code
                if e.status < 500:
                    return False
            except (Unavailable, httpx.HTTPError) as e:
                self.last_answer_error = type(e).__name__
            attempted = True
            await trio.sleep(ANSWER_RETRY_DELAY)
        return False


async def gather_audience(gatekeeper: str, count: int, http: httpx.AsyncClient) -> list[Viewer]:
    """``count`` viewers joined through ``gatekeeper`` (not yet following anything)."""
    viewers = [Viewer(gatekeeper, http, name=f"v{i}") for i in range(count)]
    limiter = trio.CapacityLimiter(JOIN_CONCURRENCY)

    async def join(viewer: Viewer) -> None:
        async with limiter:
            await viewer.join()

    async with trio.open_nursery() as nursery:
        for viewer in viewers:
            nursery.start_soon(join, viewer)
    return viewers


async def follow_all(nursery: trio.Nursery, viewers: list[Viewer], channels: list[str]) -> None:
    """Start every viewer following ``channels``; returns once all are subscribed."""
    limiter = trio.CapacityLimiter(JOIN_CONCURRENCY)

    async def start(viewer: Viewer) -> None:
        async with limiter:
            await nursery.start(viewer.follow, channels)

    async with trio.open_nursery() as starting:
        for viewer in viewers:
            starting.start_soon(start, viewer)


class DirectorError(Exception):
    pass


class Director:
    """The director API on whichever core answers first (in order; a dead one is skipped)."""

    def __init__(self, http: httpx.AsyncClient, cores: list[str], key: str) -> None:
        self.http = http
        self.cores = list(cores)
        self.headers = {"Authorization": f"Bearer {key}"}

    async def call(self, method: str, path: str, body: Any = None, *, expect: int = 200,
                   retry_for: float = 30.0) -> Any:
        """One director call; retried on other cores (and again, up to ``retry_for`` s) while no core
        can serve it (down, or 503 during a Redis failover)."""
        deadline = trio.current_time() + retry_for
        last = "no core"
        while True:
            for core in self.cores:
                try:
                    response = await self.http.request(method, core + path, json=body, headers=self.headers)
                except httpx.HTTPError as e:
                    last = f"{core}: {type(e).__name__}"
                    continue
                if response.status_code == expect:
                    return response.json() if response.content else None
                if response.status_code < 500:
                    raise DirectorError(f"{method} {path}: {response.status_code} {response.text[:200]}")
                last = f"{core}: {response.status_code}"
            if trio.current_time() > deadline:
                raise DirectorError(f"{method} {path}: no core served it ({last})")
            await trio.sleep(ANSWER_RETRY_DELAY)

    async def live_episode(self, title: str = "Live") -> str:
        show = await self.call("POST", "/v1/shows", {"title": "Show"}, expect=201)
        episode = await self.call("POST", f"/v1/shows/{show['id']}/episodes", {"title": title, "mode": "live"},
                                  expect=201)
        await self.call("POST", f"/v1/episodes/{episode['id']}/start")
        return str(episode["id"])

    async def open_quiz(self, episode_id: str, *, options: str = "ab", correct: str = "a",
                        duration: float = 60.0) -> str:
        body = {"kind": "quiz", "prompt": "Who wins?", "correct": correct, "duration": duration, "points": 1000,
                "options": [{"id": o, "label": o.upper()} for o in options]}
        created = await self.call("POST", f"/v1/episodes/{episode_id}/interactions", body, expect=201)
        await self.call("POST", f"/v1/interactions/{created['id']}/open")
        return str(created["id"])

    async def event(self, episode_id: str, number: int) -> None:
        await self.call("POST", f"/v1/episodes/{episode_id}/events", {"type": "tick", "data": {"n": number}},
                        expect=202)

    async def close(self, interaction_id: str) -> None:
        await self.call("POST", f"/v1/interactions/{interaction_id}/close")

    async def results(self, interaction_id: str) -> dict[str, Any]:
        return dict(await self.call("GET", f"/v1/interactions/{interaction_id}/results"))

    async def wait_total(self, interaction_id: str, total: int, timeout: float = 30.0) -> dict[str, Any]:
        """Results once ``total`` answers are counted (or the last results seen when time runs out)."""
        results: dict[str, Any] = {}
        with trio.move_on_after(timeout):
            while True:
                results = await self.results(interaction_id)
                if results["total"] >= total:
                    break
                await trio.sleep(0.1)
        return results


def ticks(viewer: Viewer, channel: str) -> list[int]:
    """The ``n`` of every ``director.event`` tick the viewer received on ``channel``, in order."""
    return [d["data"]["n"] for d in viewer.data_of(channel)
            if d.get("type") == "director.event" and d.get("event_type") == "tick"]
