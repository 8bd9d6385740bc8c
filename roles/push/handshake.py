"""The WebSocket opening handshake (RFC 6455 §4) with wsproto, and the ticket check that guards it.

A client must show a valid ticket (``GET /v1/ws?ticket=...`` or ``Authorization: Bearer``) before it
gets a WebSocket: anything else is refused with a plain HTTP answer (401 for a bad ticket, 404 for
another path, 400 for a malformed request, 503 when the node is full, 429 when the ticket's user already
holds ``push.max_connections_per_user`` connections here) and the connection is closed. So a
bad ticket never reaches the hub, let alone a subscription.

The caller bounds the whole exchange with ``push.handshake_timeout`` (slowloris, docs/reliability.md #5); the
request head is bounded by h11's own limit (16 KiB), past which wsproto reports a protocol error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import h11
import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from playtotv.credentials import InvalidTicket, Ticket, bearer_token
from playtotv.protocol.errors import ApiError, ErrorCode

from .users import UserSlots

WS_PATH = "/v1/ws"
#: Bytes read per receive while the request head arrives; heads are a few hundred bytes.
HANDSHAKE_RECEIVE_BYTES = 4096
#: How long a full node tells a refused client to wait before trying again.
AT_CAPACITY_RETRY_AFTER = 5.0
#: ...and a user holding all its connections (one of them may be a half-open one about to time out).
USER_FULL_RETRY_AFTER = 5.0


@dataclass(slots=True)
class Accepted:
    connection: Connection
    ticket: Ticket


class Refused(Exception):
    """The handshake ended without a WebSocket (the refusal, if any, was already sent)."""


def _reject_bytes(
    handshake: H11Handshake, error: ApiError, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> bytes:
    body = error.encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers().items()]
    headers += extra_headers or []
    return handshake.send(RejectConnection(status_code=error.status, headers=headers, has_body=True)) + \
        handshake.send(RejectData(data=body, body_finished=True))


#: A real upgrade request carries one query field (the ticket); more is refused before parsing them all.
MAX_QUERY_FIELDS = 8


def _ticket_token(request: Request) -> str | None:
    query = parse_qs(urlsplit(request.target).query, max_num_fields=MAX_QUERY_FIELDS)
    tickets = query.get("ticket")
    if tickets:
        return tickets[0]
    for name, value in request.extra_headers:
        if name.lower() == b"authorization":
            return bearer_token(value.decode("latin-1"))
    return None


async def accept(
    stream: trio.SocketStream,
    verify: Callable[[str], Ticket],
    *,
    at_capacity: Callable[[], bool],
    limiter: trio.CapacityLimiter | None = None,
    users: UserSlots | None = None,
) -> Accepted:
    """Read the upgrade request, check path, capacity, ticket and the user's connections, and answer it.

    ``verify`` raises ``InvalidTicket`` (or a subclass) for a ticket that must be refused. Returns the
    open wsproto connection and the ticket; raises Refused after answering anything else.

    ``limiter`` bounds the handshakes *processed* at once (see ``listener.MAX_CONCURRENT_HANDSHAKES``).
    It is taken only once the request head is in (a cheap byte search, no parsing), so a slowloris client
    still trickling its head holds no slot, and held through parsing, ticket check and answer: the
    CPU-heavy part of a handshake."""
    head = await _read_head(stream)
    if limiter is None:
        return await _answer(stream, head, verify, at_capacity, users)
    async with limiter:
        return await _answer(stream, head, verify, at_capacity, users)


#: The end of a request head as h11 finds it (it accepts bare LF line endings too).
_HEAD_END = re.compile(rb"\n\r?\n")
#: Past this, stop looking for the end of the head and let h11 refuse it (its own limit is 16 KiB).
HEAD_SCAN_LIMIT = 16 * 1024


async def _read_head(stream: trio.SocketStream) -> bytes:
    """The bytes received up to the end of the request head (or HEAD_SCAN_LIMIT of them)."""
    buffer = b""
    while True:
        data = await stream.receive_some(HANDSHAKE_RECEIVE_BYTES)
        if not data:
            raise Refused("closed during the handshake")
        # Search only the new bytes (plus two before them, for an end split across receives).
        start = max(0, len(buffer) - 2)
        buffer += data
        if _HEAD_END.search(buffer, start) or len(buffer) > HEAD_SCAN_LIMIT:
            return buffer


async def _answer(
    stream: trio.SocketStream, head: bytes, verify: Callable[[str], Ticket], at_capacity: Callable[[], bool],
    users: UserSlots | None,
) -> Accepted:
    handshake = H11Handshake(ConnectionType.SERVER)
    data = head
    while True:
        if not data:
            raise Refused("closed during the handshake")
        try:
            handshake.receive_data(data)
        except RemoteProtocolError as e:
            await _send_rejection(stream, handshake, e.event_hint, str(e))
            raise Refused(str(e)) from None
        for request in handshake.events():
            if not isinstance(request, Request):
                continue
            verdict = _check(request, verify, at_capacity, users)
            if isinstance(verdict, ApiError):
                await stream.send_all(_reject_bytes(handshake, verdict))
                raise Refused(verdict.message)
            # No extensions: server frames must be identical on every connection (see wsframe).
            await stream.send_all(handshake.send(AcceptConnection()))
            assert handshake.connection is not None
            return Accepted(handshake.connection, verdict)
        data = await stream.receive_some(HANDSHAKE_RECEIVE_BYTES)  # h11 wants more (rare: see _read_head)


def _check(request: Request, verify: Callable[[str], Ticket], at_capacity: Callable[[], bool],
           users: UserSlots | None = None) -> Ticket | ApiError:
    try:
        path = urlsplit(request.target).path
        token = _ticket_token(request)
    except ValueError as e:  # an unparsable target, too many query fields
        return ApiError(ErrorCode.BAD_REQUEST, f"malformed request target: {e}")
    if path != WS_PATH:
        return ApiError(ErrorCode.NOT_FOUND, f"no WebSocket at this path (use {WS_PATH})")
    if not token:
        return ApiError(ErrorCode.UNAUTHORIZED, "missing ticket")
    try:
        ticket = verify(token)
    except InvalidTicket as e:
        return ApiError(ErrorCode.UNAUTHORIZED, str(e))
    if at_capacity():
        return ApiError(ErrorCode.AT_CAPACITY, "push node full or draining", retry_after=AT_CAPACITY_RETRY_AFTER)
    if users is not None and users.full(ticket.user_id):
        return ApiError(ErrorCode.RATE_LIMITED, users.refusal(), retry_after=USER_FULL_RETRY_AFTER)
    return ticket


async def _send_rejection(stream: trio.SocketStream, handshake: H11Handshake,
                          hint: object, reason: str) -> None:
    status = hint.status_code if isinstance(hint, RejectConnection) else 400
    error = ApiError(ErrorCode.BAD_REQUEST, reason)
    error.status = status  # e.g. 426 Upgrade Required for a wrong WebSocket version
    extra = list(hint.headers) if isinstance(hint, RejectConnection) else []
    try:
        data = _reject_bytes(handshake, error, extra)
    except (h11.LocalProtocolError, LocalProtocolError):
        return  # h11 is in a state where it cannot answer at all: just close
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client is already gone; nothing left to tell it
