"""Request inputs: bounded bodies, path ids and query parameters, each refused with the contract's error
before anything reaches the store or a broker key (docs/architecture.md §7)."""

from __future__ import annotations

from typing import Literal, TypeVar

from quart import request
from werkzeug.exceptions import RequestEntityTooLarge

from playtotv.keys import ID_PATTERN
from playtotv.protocol.decoding import JsonDecoder
from playtotv.protocol.errors import ApiError
from playtotv.protocol.rest import decode_request

T = TypeVar("T")

LEADERBOARD_DEFAULT_LIMIT = 10
LEADERBOARD_MAX_LIMIT = 100


async def body(decoder: JsonDecoder[T], max_bytes: int) -> T:
    """Decode the request body; larger than ``max_bytes`` → 400 without reading it (when declared)."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise ApiError("bad_request", f"body larger than {max_bytes} bytes")
    try:
        raw = await request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise ApiError("bad_request", f"body larger than {max_bytes} bytes") from None
    assert isinstance(raw, bytes)
    if len(raw) > max_bytes:
        raise ApiError("bad_request", f"body larger than {max_bytes} bytes")
    return decode_request(decoder, raw)


def path_id(value: str, what: str) -> str:
    """Ids in paths become store ids and key parts; one that cannot exist is simply unknown."""
    if not ID_PATTERN.match(value):
        raise ApiError("not_found", f"unknown {what}")
    return value


def leaderboard_query() -> tuple[Literal["global", "friends"], int]:
    scope: Literal["global", "friends"]
    match request.args.get("scope", "global"):
        case "global":
            scope = "global"
        case "friends":
            scope = "friends"
        case _:
            raise ApiError("bad_request", "scope must be global or friends")
    raw_limit = request.args.get("limit", str(LEADERBOARD_DEFAULT_LIMIT))
    try:
        limit = int(raw_limit)
    except ValueError:
        raise ApiError("bad_request", "limit must be an integer") from None
    if not 1 <= limit <= LEADERBOARD_MAX_LIMIT:
        raise ApiError("bad_request", f"limit must be from 1 to {LEADERBOARD_MAX_LIMIT}")
    return scope, limit
