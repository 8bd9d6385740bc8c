"""Refusals answered beneath the web framework, so a refusal costs less than any framework endpoint.

At show start the gatekeeper's traffic is mostly clients it must refuse (docs/architecture.md §5: a rejection
must be cheaper than an admission, at least as fast as a trivial endpoint on
the same stack). The decision itself is a few microseconds (``Gatekeeper.decide``: a snapshot read, a
waiting-room lookup, one HMAC); through Quart it came wrapped in a request object, routing, the hooks,
a response object and quart-trio's two tasks per request, about as much as a trivial endpoint costs:
``bench admission`` measured a refusal through Quart at 0.91 of the trivial endpoint's efficiency (CPU
per request), the gatekeeper's own code being ~5 % of the process's CPU; answered here, 1.2–1.3.

:class:`FastRefusals` wraps the gatekeeper's ASGI app. A ``POST /v1/session`` has its body read here
(bounded by the app's body limit) and decided; a refusal is sent straight through ASGI with the bytes
and headers the route would send (JSON body, ``Retry-After``, CORS) and is counted in the same request
metrics. Everything else — admissions, malformed or oversized bodies, a draining node, other routes —
goes on to Quart with the body replayed, so the route stays the one authority on those (it decides
again: deciding a place has no side effect).

It is also the gatekeeper's front door for the per-address limit on new sessions (``sessionlimit.py``):
every ``POST /v1/session`` passes here first, and one over its address's limit is answered 429
``rate_limited`` before any decision.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from playtotv.http import CORS_HEADERS
from playtotv.protocol.errors import ApiError, ErrorCode

from .outcome import Refusal
from .sessionlimit import SessionLimit

if TYPE_CHECKING:
    from . import Gatekeeper

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

SESSION_PATH = "/v1/session"
#: The route name the request metrics use for this path (Quart's rule), so both paths count as one.
SESSION_RULE = "/v1/session"
RATE_LIMITED_MESSAGE = "too many new sessions from this address; retry later"
#: A refused address is told to wait at least this long: retrying at the refill rate is still a flood.
MIN_RATE_RETRY_AFTER = 1.0
_STATIC_HEADERS = [(b"content-type", b"application/json")] + [
    (name.lower().encode(), value.encode()) for name, value in CORS_HEADERS.items()
]


class FastRefusals:
    """ASGI middleware in front of the gatekeeper's Quart app (see the module docstring)."""

    def __init__(self, app: App, gatekeeper: Gatekeeper, *, max_body: int) -> None:
        self.app = app
        self.gatekeeper = gatekeeper
        self.max_body = max_body
        self.limit = SessionLimit(gatekeeper.ctx.settings.gatekeeper)
        metrics = gatekeeper.ctx.metrics
        # Label lookups are bound once: prometheus_client's labels() costs more than the refusal logic.
        self._requests = metrics.requests.labels("gatekeeper", "POST", SESSION_RULE, "503")
        self._limited = metrics.requests.labels("gatekeeper", "POST", SESSION_RULE, "429")
        self._limited_admissions = metrics.admissions.labels("rate_limited")
        self._latency = metrics.latency.labels("gatekeeper", SESSION_RULE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != SESSION_PATH:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        messages, body = await _read_body(scope, receive, self.max_body)
        wait = self.limit.wait(scope)
        if wait is not None:
            retry_after = round(max(wait, MIN_RATE_RETRY_AFTER), 2)
            error = ApiError(ErrorCode.RATE_LIMITED, RATE_LIMITED_MESSAGE, retry_after=retry_after)
            await _send_refusal(send, Refusal(error.encode(), error.headers()["Retry-After"]), status=429)
            self._limited.inc()
            self._limited_admissions.inc()
            self._latency.observe(time.perf_counter() - started)
            return
        refusal = self._refusal(body) if body is not None else None
        if refusal is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        await _send_refusal(send, refusal)
        self._requests.inc()
        self._latency.observe(time.perf_counter() - started)

    def _refusal(self, body: bytes) -> Refusal | None:
        try:
            outcome = self.gatekeeper.decide(body, time.time())
        except (msgspec.DecodeError, msgspec.ValidationError, ApiError):
            return None  # the route answers these with the proper error
        return outcome if isinstance(outcome, Refusal) else None


async def _read_body(scope: Scope, receive: Receive, limit: int) -> tuple[list[Message], bytes | None]:
    """The request's ``http.request`` messages and its body; body None when it is (or says it is) over
    ``limit``, in which case the messages read so far are returned for replay and Quart answers 413."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit() or int(value) > limit:
                return [], None
            break
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None  # a disconnect: let the app see it
        size += len(message.get("body", b""))
        if size > limit:
            return messages, None
        if not message.get("more_body", False):
            break
    if len(messages) == 1:
        return messages, messages[0].get("body", b"")
    return messages, b"".join(m.get("body", b"") for m in messages)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that hands out ``messages`` first, then reads on (the app waits for the disconnect)."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def _send_refusal(send: Send, refusal: Refusal, status: int = 503) -> None:
    headers = _STATIC_HEADERS + [
        (b"content-length", str(len(refusal.body)).encode()),
        (b"retry-after", refusal.retry_after.encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": refusal.body, "more_body": False})
