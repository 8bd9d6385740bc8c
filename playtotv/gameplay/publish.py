"""Publishing message data (protocol.push) on episode and user channels.

Each message is encoded once here; the broker stores and forwards those bytes and the push nodes splice
them into client frames unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import trio

from playtotv import keys
from playtotv.broker.base import ChannelMessage, Channels

_encode = msgspec.json.Encoder().encode

#: Publishes in flight at once when one event fans out to many user channels (score updates after a
#: reveal): enough to keep a Redis connection pool busy, few enough not to starve the rest of the node.
PUBLISH_CONCURRENCY = 8


def encode(data: msgspec.Struct) -> bytes:
    return _encode(data)


async def to_episode(broker: Channels, episode_id: str, data: msgspec.Struct) -> ChannelMessage:
    return await broker.publish(keys.episode_channel(episode_id), _encode(data))


async def to_episode_once(broker: Channels, episode_id: str, data: msgspec.Struct, marker: str,
                          ttl: float) -> ChannelMessage | None:
    """``to_episode`` for a message that must go out once whoever repeats it (None: it already went)."""
    return await broker.publish_once(keys.episode_channel(episode_id), _encode(data), marker, ttl)


async def to_user(broker: Channels, user_id: str, data: msgspec.Struct) -> ChannelMessage:
    return await broker.publish(keys.user_channel(user_id), _encode(data))


async def to_users(broker: Channels, messages: Sequence[tuple[str, msgspec.Struct]]) -> None:
    """Publish ``(user_id, data)`` pairs with bounded concurrency. A failure propagates (the caller's job
    is then retried; subscribers tolerate a repeated score or notification message)."""
    if not messages:
        return
    pending = iter(messages)  # shared by the publishers: each takes the next pair when it is free

    async def publisher() -> None:
        for user_id, data in pending:
            await broker.publish(keys.user_channel(user_id), _encode(data))

    async with trio.open_nursery() as nursery:
        for _ in range(min(PUBLISH_CONCURRENCY, len(messages))):
            nursery.start_soon(publisher)


async def notify_scheduler(broker: Channels, episode_id: str, interaction_id: str | None = None) -> None:
    """Tell the scheduler leader that this episode's agenda changed (started, ended) or that one
    interaction opened with a deadline, so it need not poll the store. Best effort: it also reloads
    periodically."""
    notice = {"episode_id": episode_id}
    if interaction_id is not None:
        notice["interaction_id"] = interaction_id
    await broker.publish(keys.SCHEDULER_NOTICES, _encode(notice))
