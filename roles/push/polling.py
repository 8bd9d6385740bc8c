"""Long polling, the WebSocket fallback: ``GET /v1/poll`` on the push role's HTTP listener.

Same channels, same messages, same offsets as the WebSocket (the bodies splice the very frames the hub
fanned out). A poll answers at once when its client is behind (messages after ``offset``), has no
position yet (no ``epoch``/``offset``: it learns the current one), or cannot be caught up
(``recovered: false``); otherwise it waits until the next publish on any of its channels (all waiting
polls of a channel are woken together) or ``timeout``.

Several channels in one request: repeat ``channel``, and give ``epoch`` and ``offset`` in the same order
(empty values for a channel without a position yet). One channel answers the object of docs/api.md; several
answer a JSON array of those objects, in request order.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from quart import Response, request
from quart_trio import QuartTrio

from playtotv.credentials import InvalidTicket, Ticket, bearer_token
from playtotv.protocol.errors import ApiError, ErrorCode
from playtotv.protocol.push import CHANNEL_REGEX
from playtotv.store.base import StoreUnavailable

from .access import EpisodeDirectory, may_follow
from .hub import ChannelUnavailable, Hub, PollRequest
from .users import UserSlots

if TYPE_CHECKING:
    from playtotv.context import NodeContext

POLL_PATH = "/v1/poll"
#: docs/api.md's example waits 25 s: below common proxy idle timeouts (30 s and up).
DEFAULT_TIMEOUT = 25.0
#: A longer wait would only hold a request slot longer; clients asking more get this.
MAX_TIMEOUT = 60.0
#: Channels per poll: a client follows its episode and its user channel, rarely more.
MAX_CHANNELS = 8
#: A client told the broker is down retries after this long.
UNAVAILABLE_RETRY_AFTER = 2.0
#: A user holding all its connections on this node (``push.max_connections_per_user``) retries after this.
USER_FULL_RETRY_AFTER = 5.0

_channel_re = re.compile(CHANNEL_REGEX)


class PollStats:
    """Polls in flight, for the node's load report."""

    def __init__(self) -> None:
        self.active = 0


def _ticket(ctx: NodeContext) -> Ticket:
    token = request.args.get("ticket") or bearer_token(request.headers.get("Authorization"))
    if not token:
        raise ApiError(ErrorCode.UNAUTHORIZED, "missing ticket")
    try:
        return ctx.tickets.verify(token)
    except InvalidTicket as e:
        raise ApiError(ErrorCode.UNAUTHORIZED, str(e)) from None


def _timeout() -> float:
    raw = request.args.get("timeout")
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(ErrorCode.BAD_REQUEST, "timeout must be a number of seconds") from None
    if not value >= 0:  # also refuses nan
        raise ApiError(ErrorCode.BAD_REQUEST, "timeout must be >= 0")
    return min(value, MAX_TIMEOUT)


def _requests(user_id: str) -> list[PollRequest]:
    channels = request.args.getlist("channel")
    if not channels:
        raise ApiError(ErrorCode.BAD_REQUEST, "channel is required")
    if len(channels) > MAX_CHANNELS:
        raise ApiError(ErrorCode.BAD_REQUEST, f"at most {MAX_CHANNELS} channels per poll")
    epochs = request.args.getlist("epoch")
    offsets = request.args.getlist("offset")
    requests = []
    for i, channel in enumerate(channels):
        if len(channel) > 160 or not _channel_re.match(channel):
            raise ApiError(ErrorCode.BAD_REQUEST, f"invalid channel {channel[:160]!r}")
        if not may_follow(user_id, channel):
            raise ApiError(ErrorCode.FORBIDDEN, f"not allowed to follow {channel}")
        epoch = epochs[i] if i < len(epochs) else ""
        offset = offsets[i] if i < len(offsets) else ""
        requests.append(_position(channel, epoch, offset))
    return requests


def _position(channel: str, epoch: str, offset: str) -> PollRequest:
    if not epoch and not offset:
        return PollRequest(channel)
    # A position that cannot be understood cannot be filled: recovered:false, not an error
    # (docs/reliability.md #2), so the client recovers the same way as from any lost position.
    if not epoch or not offset.isdigit() or len(epoch) > 64 or len(offset) > 18:
        return PollRequest(channel, malformed=True)
    return PollRequest(channel, epoch, int(offset))


async def _check_exist(directory: EpisodeDirectory, requests: list[PollRequest]) -> None:
    """404 ``not_found`` for a channel of an episode that does not exist (docs/api.md's code for unknown ids)."""
    try:
        for r in requests:
            if not await directory.exists(r.channel):
                raise ApiError(ErrorCode.NOT_FOUND, f"no such channel {r.channel}")
    except StoreUnavailable as e:
        raise ApiError(ErrorCode.UNAVAILABLE, str(e), retry_after=UNAVAILABLE_RETRY_AFTER) from None


def add_poll_route(app: QuartTrio, ctx: NodeContext, hub: Hub, stats: PollStats,
                   users: UserSlots, directory: EpisodeDirectory) -> None:
    @app.get(POLL_PATH)
    async def poll() -> Response:
        ticket = _ticket(ctx)
        requests = _requests(ticket.user_id)
        timeout = _timeout()
        await _check_exist(directory, requests)
        if not users.acquire(ticket.user_id):  # a waiting poll holds a connection like a WebSocket
            raise ApiError(ErrorCode.RATE_LIMITED, users.refusal(), retry_after=USER_FULL_RETRY_AFTER)
        stats.active += 1
        try:
            answers = await hub.poll(requests, timeout)
        except ChannelUnavailable as e:
            raise ApiError(ErrorCode.UNAVAILABLE, str(e), retry_after=UNAVAILABLE_RETRY_AFTER) from None
        finally:
            stats.active -= 1
            users.release(ticket.user_id)
        body = answers[0] if len(answers) == 1 else b"[" + b",".join(answers) + b"]"
        return Response(body, content_type="application/json")
