"""Notifications: stored per user, pushed on the user's channel, listed with a cursor.

Each notification has a natural id derived from what it is about (the achievement, the friend and the
interaction, ...), so a job that runs twice stores and pushes it once.

The cursor of ``GET /v1/me/notifications`` must neither skip nor repeat a notification although several
workers write them with their own clocks. It holds a watermark ``W`` and the ids already returned that are
newer than ``W``; ``W`` trails the present by ``SETTLE_SECONDS``, longer than any notification takes from
being stamped to being visible in the store (clock skew included). A notification newer than ``W`` is
returned unless the cursor names it; one older than ``W`` was visible when ``W`` was chosen, so it was
returned then.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec

from playtotv.gameplay import publish, schema
from playtotv.gameplay.service import Gameplay
from playtotv.protocol.errors import ApiError
from playtotv.protocol.rest import Notification, NotificationList

#: Most recent notifications listed (and kept reachable): a page, not an archive.
PAGE_LIMIT = 100
#: See the module docstring.
SETTLE_SECONDS = 5.0
#: A cursor names at most the ids of one page; anything longer is not one of ours.
MAX_CURSOR_CHARS = 64 + PAGE_LIMIT * 24
_CURSOR_SEPARATOR = "~"
_ID_SEPARATOR = ","


def notification_id(*parts: str) -> str:
    """A short id from the notification's natural key (URL- and cursor-safe characters only)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=9).hexdigest()
    return f"n_{digest}"


def _doc(owner: str, notification: Notification) -> dict:
    return {
        "_id": notification.id,
        "owner": owner,
        "created_at": notification.created_at,
        "notification": msgspec.to_builtins(notification),
    }


async def deliver(gameplay: Gameplay, items: Sequence[tuple[str, Notification]]) -> list[tuple[str, Notification]]:
    """Store and push ``(owner, notification)`` pairs; returns those that were new (a repeated delivery
    stores and pushes nothing)."""
    if not items:
        return []
    unique = {n.id: (owner, n) for owner, n in items}
    existing = {d["_id"] for d in await gameplay.store.get_many(schema.NOTIFICATIONS, list(unique))}
    new = [pair for nid, pair in unique.items() if nid not in existing]
    if new:
        await gameplay.store.bulk_insert(schema.NOTIFICATIONS, [_doc(owner, n) for owner, n in new])
        await publish.to_users(gameplay.broker, new)
    return new


def encode_cursor(watermark: float, seen: Sequence[str]) -> str:
    text = repr(float(watermark))
    return f"{text}{_CURSOR_SEPARATOR}{_ID_SEPARATOR.join(seen)}" if seen else text


def decode_cursor(cursor: str) -> tuple[float, set[str]]:
    """Raise 400 ``bad_request`` unless ``cursor`` is one we produced."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise ApiError("bad_request", "invalid notifications cursor")
    head, _, tail = cursor.partition(_CURSOR_SEPARATOR)
    try:
        watermark = float(head)
    except ValueError:
        raise ApiError("bad_request", "invalid notifications cursor") from None
    if watermark != watermark or watermark in (float("inf"), float("-inf")):
        raise ApiError("bad_request", "invalid notifications cursor")
    seen = {i for i in tail.split(_ID_SEPARATOR) if i} if tail else set()
    return watermark, seen


async def list_for(gameplay: Gameplay, owner: str, since: str | None, now: float) -> NotificationList:
    watermark, seen = decode_cursor(since) if since else (float("-inf"), set())
    docs = await gameplay.store.find(schema.NOTIFICATIONS, {"owner": owner}, order_by="created_at", descending=True,
                                     limit=PAGE_LIMIT)
    docs.reverse()  # oldest first
    fresh = [d for d in docs if d["created_at"] > watermark and d["_id"] not in seen]
    next_watermark = max(watermark, now - SETTLE_SECONDS)
    still_recent = [d["_id"] for d in docs if d["created_at"] > next_watermark]
    notifications = [msgspec.convert(d["notification"], Notification) for d in fresh]
    return NotificationList(notifications=notifications, cursor=encode_cursor(next_watermark, still_recent))
