"""The Python client SDK (trio): join through the gatekeeper, stick to a core node, fail over, receive
pushes over WebSocket with a long-polling fallback, and recover missed messages.

    async with PlayToTVClient("http://127.0.0.1:8000", name="Ann") as client:
        await client.join()
        async with client.push([f"episode:{episode_id}"]) as stream:
            async for event in stream:                 # every message of each channel, in order, once
                if isinstance(event, MessageReceived):
                    data = message_data(event)
                    if data["type"] == "interaction.opened":
                        await client.answer(data["interaction"]["id"], "a")

Failover rules (docs/api.md §3): the client keeps to the first core endpoint of its list; it moves
to the next on a connection error, a 5xx, or a round trip over ``max_rtt_ms``; when the list is exhausted
it goes back to the gatekeeper (resuming its identity with its ticket). Answers are idempotent across a
failover: a retry that meets ``409 already_answered`` means the first attempt landed.

While a push stream holds a WebSocket, ``answer`` sends the answer on it (docs/api.md §5.1: far cheaper
for the platform than a request); without one, or when the socket cannot settle it, it answers over REST.
Both transports share one dedupe key per interaction and user, so the REST retry of an answer the
socket may have delivered is never counted twice.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import msgspec
import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, open_websocket_url

from playtotv.points import PointsTracker
from playtotv.protocol.errors import STATUS, ErrorCode
from playtotv.pushclient import (
    AnswerAccepted,
    AnswerFailed,
    ChannelPosition,
    Event,
    MessageReceived,
    PushClient,
    ReconnectRequested,
    RemoteProtocolError,
    Resubscribe,
)

log = logging.getLogger("playtotv.client")

#: Bounds of one HTTP request; a stalled core node must not stall the client.
REQUEST_TIMEOUT = 5.0
#: How many times one call may move to another endpoint (or rejoin) before giving up.
MAX_FAILOVERS = 6
#: At capacity the gatekeeper says when to come back; we add jitter and give up after this long.
MAX_JOIN_WAIT = 120.0
#: Consecutive slow round trips before moving on (one slow request is not a slow node).
SLOW_STRIKES = 2
#: WebSocket drops on one node within DROP_WINDOW seconds before the client settles for long polling.
MAX_WS_DROPS = 3
DROP_WINDOW = 60.0
#: Long-poll wait asked of the server, and the HTTP timeout that covers it.
POLL_TIMEOUT = 20.0
#: Client keepalive on the WebSocket (the server pings too; this detects a dead path from our side).
WS_PING_INTERVAL = 20.0
#: Events buffered for a slow application before the push pump waits for it (bounded memory).
EVENT_BUFFER = 10_000
#: Pause between reconnection attempts after every push node failed (then the list is renewed).
RECONNECT_BACKOFF = 0.5


class ClientError(Exception):
    """An error response from the platform: ``code`` and ``status`` as docs/api.md documents them."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class Unavailable(Exception):
    """No endpoint answered after every failover."""


def _error_of(response: httpx.Response) -> ClientError:
    try:
        err = response.json()["error"]
        return ClientError(response.status_code, err.get("code", "unknown"), err.get("message", ""),
                           err.get("retry_after"))
    except (ValueError, KeyError, TypeError):
        return ClientError(response.status_code, "unknown", response.text[:200])


class PlayToTVClient:
    def __init__(
        self,
        gatekeeper: str,
        *,
        name: str | None = None,
        transports: tuple[str, ...] = ("websocket", "polling"),
        http: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.gatekeeper = gatekeeper.rstrip("/")
        self.name = name
        self.transports = list(transports)
        self._http = http or httpx.AsyncClient(timeout=REQUEST_TIMEOUT)
        self._owns_http = http is None
        self._rng = rng or random.Random()
        self.session: dict[str, Any] | None = None
        self._core_index = 0
        self._slow = 0
        self._queue_token: str | None = None
        self.failovers = 0
        #: The push stream open now (its WebSocket carries answers), if any.
        self._stream: PushStream | None = None
        self._request_ids = itertools.count(1)
        #: Answers settled on the WebSocket and over REST (for tests and diagnostics).
        self.answers_by_transport = {"websocket": 0, "rest": 0}
        #: The viewer's own score: ``client.points.revealed(channel, data)`` on an ``interaction.revealed``
        #: gives this reveal's points and the new total (the platform sends no per-viewer score message).
        self.points = PointsTracker()

    async def __aenter__(self) -> PlayToTVClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # -- session ---------------------------------------------------------------------------------------
    @property
    def ticket(self) -> str:
        assert self.session is not None, "join() first"
        return self.session["ticket"]

    @property
    def user_id(self) -> str:
        assert self.session is not None, "join() first"
        return self.session["user_id"]

    @property
    def core_url(self) -> str:
        assert self.session is not None, "join() first"
        return self.session["core"][self._core_index]

    async def join(self, *, max_wait: float = MAX_JOIN_WAIT) -> dict[str, Any]:
        """Ask the gatekeeper for a session; wait as told (with jitter) while the platform is full or
        this address has asked too often (429).

        A returning client resumes its identity with its previous ticket."""
        deadline = trio.current_time() + max_wait
        while True:
            body: dict[str, Any] = {"transports": self.transports}
            if self.name:
                body["name"] = self.name
            if self.session is not None:
                body["resume"] = self.session["ticket"]
            if self._queue_token:
                body["queue"] = self._queue_token
            response = await self._http.post(f"{self.gatekeeper}/v1/session", json=body)
            if response.status_code == 200:
                self.session = response.json()
                self._core_index = 0
                self._slow = 0
                self._queue_token = None
                return self.session
            error = _error_of(response)
            if response.status_code not in (503, 429):  # full, or this address asked too often: wait
                raise error
            try:
                self._queue_token = response.json().get("queue") or self._queue_token
            except ValueError:
                pass
            wait = (error.retry_after or 1.0) * self._rng.uniform(1.0, 1.5)
            if trio.current_time() + wait > deadline:
                raise error
            await trio.sleep(wait)

    # -- REST with stickiness and failover --------------------------------------------------------------
    def _next_core(self) -> bool:
        """Move to the next core endpoint; False when the list is exhausted."""
        assert self.session is not None
        self.failovers += 1
        self._slow = 0
        if self._core_index + 1 < len(self.session["core"]):
            self._core_index += 1
            return True
        return False

    async def request(self, method: str, path: str, *, json: Any = None, params: Any = None,
                      auth: str | None = None) -> Any:
        """Call core; returns the decoded body (None for 204). Raises ClientError for 4xx answers."""
        if self.session is None:
            await self.join()
        for _ in range(MAX_FAILOVERS + 1):
            url = self.core_url + path
            headers = {"Authorization": f"Bearer {auth or self.ticket}"}
            started = trio.current_time()
            try:
                response = await self._http.request(method, url, json=json, params=params, headers=headers)
            except httpx.TransportError as e:
                log.info("core %s failed (%s): moving on", self.core_url, type(e).__name__)
                await self._fail_over()
                continue
            rtt_ms = (trio.current_time() - started) * 1000
            if response.status_code >= 500 and response.status_code != 503 or (
                response.status_code == 503 and _error_of(response).code == "unavailable"
            ):
                await self._fail_over()
                continue
            slow = self.session is not None and rtt_ms > self.session["max_rtt_ms"]
            self._slow = self._slow + 1 if slow else 0
            if self._slow >= SLOW_STRIKES:
                await self._fail_over()  # the answer still counts; the next call goes elsewhere
            if response.status_code >= 400:
                raise _error_of(response)
            if method == "PUT" and path == "/v1/me" and isinstance(json, dict) and "name" in json:
                self.name = json["name"]  # the name a later resume sends must not undo this rename
            return None if response.status_code == 204 or not response.content else response.json()
        raise Unavailable(f"{method} {path}: no core node answered after {MAX_FAILOVERS} failovers")

    async def _fail_over(self) -> None:
        if not self._next_core():
            await self.join()  # the list is exhausted: ask the gatekeeper for a fresh one

    async def rename(self, name: str) -> dict[str, Any]:
        """Change the viewer's display name (``PUT /v1/me``); later joins (resumes) send this one."""
        return await self.request("PUT", "/v1/me", json={"name": name})

    async def answer(self, interaction_id: str, choice: str | int) -> dict[str, Any]:
        """Answer once, whatever fails in between: on the push WebSocket when one is open, else (or when
        it cannot settle the answer) over REST. A retry after a lost reply meets ``already_answered``,
        which means the first attempt was counted: ``{"accepted": True, "duplicate": True}``."""
        maybe_sent = False
        stream = self._stream
        if stream is not None and stream.websocket_open:
            request_id = f"a{next(self._request_ids)}"
            while True:
                maybe_sent = True
                reply = await stream.send_answer(request_id, interaction_id, choice)
                if isinstance(reply, AnswerAccepted):
                    self.answers_by_transport["websocket"] += 1
                    body = {"accepted": True, "received_at": reply.received_at}
                    self._answered(interaction_id, choice, body)
                    return body
                if reply is None or reply.code == "unavailable":
                    break  # the socket dropped, no reply in time, or the node cannot record it: REST
                if reply.code == "rate_limited":
                    await trio.sleep(reply.retry_after or 0.5)
                    continue
                raise ClientError(_status_of(reply.code), reply.code, reply.message, reply.retry_after)
        failovers_before = self.failovers
        for attempt in range(MAX_FAILOVERS + 1):
            try:
                body = await self.request("POST", f"/v1/interactions/{interaction_id}/answers",
                                          json={"choice": choice})
                self.answers_by_transport["rest"] += 1
                self._answered(interaction_id, choice, body)
                return body
            except ClientError as e:
                # a retry of ours (here, or a failover inside request(), or after the socket) meeting
                # "already answered" means an earlier attempt landed and only its response was lost
                retried = maybe_sent or attempt > 0 or self.failovers > failovers_before
                if e.code == "already_answered" and retried:
                    return {"accepted": True, "duplicate": True}
                if e.code == "rate_limited":
                    await trio.sleep(e.retry_after or 0.5)
                    continue
                raise
            except Unavailable:
                if attempt == MAX_FAILOVERS:
                    raise
        raise Unavailable("answer not delivered")

    def _answered(self, interaction_id: str, choice: str | int, body: Any) -> None:
        """Note an accepted answer's ``received_at``: the points of its reveal are computed from it."""
        if isinstance(body, dict) and isinstance(body.get("received_at"), float | int):
            self.points.answered(interaction_id, choice, float(body["received_at"]))

    def push(self, channels: Sequence[str] = ()) -> AbstractAsyncContextManager[PushStream]:
        """``async with client.push(["episode:E1"]) as stream: async for event in stream: ...``"""
        return _push_stream(self, list(channels))

    def server_time_offset(self) -> float:
        """server clock − local clock at join time, for countdowns synchronised to ``server_time``."""
        assert self.session is not None
        return self.session["server_time"] - time.time()


def _status_of(code: str) -> int:
    try:
        return STATUS[ErrorCode(code)]
    except ValueError:
        return 400  # a code this SDK does not know yet: a client error all the same


class _PendingAnswer:
    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: AnswerAccepted | AnswerFailed | None = None


class _MoveOn(Exception):
    """This push node asked us to leave (draining) or failed: go to the next one."""


class PushStream:
    """Push messages of one client, in order and exactly once per channel, over WebSocket or long polling.

    Obtained with ``async with client.push(channels) as stream``; iterate it for events
    (``pushclient.MessageReceived``, ``StateLost`` — reload that channel over REST —, ``Subscribed``, ...).
    Transport choice: the first push node's WebSocket; long polling on the same node when the WebSocket
    cannot be opened or keeps dropping; the next node when the node fails; the gatekeeper (resuming the
    identity) when the list is exhausted. Every reconnection resubscribes with ``since``.
    """

    def __init__(self, client: PlayToTVClient, channels: list[str]) -> None:
        self.client = client
        self.state = PushClient(user_id=client.user_id)
        for channel in channels:
            self.state.channels.setdefault(channel, ChannelPosition())
        self._send, self._receive = trio.open_memory_channel[Event](EVENT_BUFFER)
        self._ws: WebSocketConnection | None = None
        self.transport: str | None = None  # "websocket" or "polling", for tests and diagnostics
        self.node_index = 0
        self.reconnects = 0
        self._answers: dict[str, _PendingAnswer] = {}

    @property
    def websocket_open(self) -> bool:
        return self._ws is not None

    async def send_answer(self, request_id: str, interaction_id: str,
                          choice: str | int) -> AnswerAccepted | AnswerFailed | None:
        """Send an ``answer`` frame and wait for its reply; None when it could not be settled here (no
        WebSocket, it closed, or no reply within ``REQUEST_TIMEOUT``): it may or may not have landed."""
        ws = self._ws
        if ws is None:
            return None
        pending = self._answers[request_id] = _PendingAnswer()
        try:
            await ws.send_message(PushClient.answer(request_id, interaction_id, choice).decode())
            with trio.move_on_after(REQUEST_TIMEOUT):
                await pending.done.wait()
            return pending.reply
        except ConnectionClosed:
            return None
        finally:
            self._answers.pop(request_id, None)

    def __aiter__(self) -> PushStream:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def subscribe(self, channel: str) -> None:
        frame = self.state.subscribe(channel)
        if self._ws is not None:
            await self._ws.send_message(frame.decode())

    # -- the pump ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        drops: list[float] = []
        polling_only = "websocket" not in self.client.transports
        while True:
            session = self.client.session
            assert session is not None
            if self.node_index >= len(session["push"]):
                await trio.sleep(RECONNECT_BACKOFF)
                await self.client.join()  # a fresh list (and ticket) from the gatekeeper
                self.state.user_id = self.client.user_id
                self.node_index = 0
                continue
            node = session["push"][self.node_index]
            ws_url = node.get("websocket")
            if ws_url and not polling_only:
                self.transport = "websocket"
                failure = await _attempt(self._run_websocket(ws_url))
                if isinstance(failure, _MoveOn):
                    self._next_node()
                    polling_only = "websocket" not in self.client.transports
                    drops.clear()
                    continue
                now = trio.current_time()
                drops = [t for t in drops if now - t < DROP_WINDOW] + [now]
                if isinstance(failure, (OSError, HandshakeError)) or len(drops) >= MAX_WS_DROPS:
                    # cannot open, or keeps dropping: this node over long polling (a dead node fails there too)
                    log.info("websocket unusable on %s (%r): long polling", ws_url, failure)
                    polling_only = True
                self.reconnects += 1
                continue
            self.transport = "polling"
            failure = await _attempt(self._run_polling(node["polling"]) if node.get("polling")
                                     else _raise(_MoveOn("no polling endpoint")))
            log.info("push node %d left (%r): next", self.node_index, failure)
            self._next_node()
            polling_only = "websocket" not in self.client.transports
            drops.clear()

    def _next_node(self) -> None:
        self.node_index += 1
        self.reconnects += 1

    async def _deliver(self, events: list[Event]) -> list[Resubscribe]:
        resubscribe: list[Resubscribe] = []
        for event in events:
            if isinstance(event, (AnswerAccepted, AnswerFailed)):
                pending = self._answers.get(event.id)
                if pending is not None:  # else its sender gave up waiting: it retries over REST
                    pending.reply = event
                    pending.done.set()
            elif isinstance(event, Resubscribe):
                resubscribe.append(event)
            elif isinstance(event, ReconnectRequested):
                await trio.sleep(event.after)
                raise _MoveOn("the node asked us to reconnect")
            else:
                await self._send.send(event)
        return resubscribe

    async def _run_websocket(self, url: str) -> None:
        async with open_websocket_url(f"{url}?ticket={self.client.ticket}", connect_timeout=REQUEST_TIMEOUT,
                                      disconnect_timeout=1.0) as ws:
            self._ws = ws
            try:
                await self._serve_websocket(ws)
            finally:
                self._ws = None
                for pending in self._answers.values():
                    pending.done.set()  # unsettled: their senders go to REST

    async def _serve_websocket(self, ws: WebSocketConnection) -> None:
        for frame in self.state.connection_made():
            await ws.send_message(frame.decode())
        async with trio.open_nursery() as nursery:
            async def keepalive() -> None:
                while True:
                    await trio.sleep(WS_PING_INTERVAL)
                    await ws.send_message(PushClient.ping().decode())

            nursery.start_soon(keepalive)
            while True:
                data = await ws.get_message()
                for gap in await self._deliver(self.state.receive(data)):
                    await ws.send_message(gap.frame.decode())

    async def _run_polling(self, url: str) -> None:
        own = self.state.user_channel
        if own is not None:
            self.state.channels.setdefault(own, ChannelPosition())
        http = self.client._http
        while True:
            params = httpx.QueryParams([*self.state.poll_params(), ("ticket", self.client.ticket),
                                        ("timeout", str(POLL_TIMEOUT))])
            response = await http.get(url, params=params, timeout=POLL_TIMEOUT + REQUEST_TIMEOUT)
            if response.status_code == 401:
                await self.client.join()  # the ticket expired: a fresh one, same identity
                continue
            if response.status_code >= 500:
                raise _MoveOn(f"poll answered {response.status_code}")
            if response.status_code != 200:
                raise _error_of(response)
            await self._deliver(self.state.receive_poll(response.content))


#: Failures of a push connection that mean "try again elsewhere", not "the application is broken".
_CONNECTION_FAILURES = (_MoveOn, OSError, HandshakeError, ConnectionClosed, trio.TooSlowError,
                        httpx.TransportError, RemoteProtocolError)


async def _raise(error: BaseException) -> None:
    raise error


async def _attempt(connection: Awaitable[None]) -> BaseException | None:
    """Run one push connection until it fails; the failure (unwrapped from trio's exception groups),
    or None if it ended cleanly. Anything else (a bug, a cancellation) propagates."""
    failure: BaseException | None = None
    try:
        await connection
    except* _CONNECTION_FAILURES as group:
        failure = group
        while isinstance(failure, BaseExceptionGroup):
            failure = failure.exceptions[0]
    return failure


def message_data(event: MessageReceived) -> dict[str, Any]:
    """The decoded ``data`` of a pushed message (``{"type": "interaction.opened", ...}``)."""
    return msgspec.json.decode(event.data)


@asynccontextmanager
async def _push_stream(client: PlayToTVClient, channels: list[str]) -> AsyncIterator[PushStream]:
    if client.session is None:
        await client.join()
    stream = PushStream(client, channels)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.run)
        client._stream = stream
        try:
            yield stream
        finally:
            if client._stream is stream:
                client._stream = None
            nursery.cancel_scope.cancel()

