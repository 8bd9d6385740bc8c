"""Which channels a client may follow (docs/api.md §5): its own ``user:<id>`` and the ``episode:<id>`` of
an episode that exists.

The channel name itself is validated by the protocol decoder (``protocol.push.Channel``) before it gets
here. :func:`may_follow` decides ownership without any I/O; :class:`EpisodeDirectory` decides existence
(a made-up episode channel is ``not_found``), so no client can make the broker keep state for names
nobody publishes to. Both transports apply the same two rules.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from playtotv.keys import ID_PATTERN, episode_channel, user_channel
from playtotv.store.base import StoreUnavailable

_EPISODE_PREFIX = episode_channel("")

#: Episode ids known to exist, kept (least recently asked first out) up to this many. Episodes are never
#: deleted, so a known id never goes stale; the bound only caps memory.
KNOWN_EPISODES_MAX = 100_000
#: Ids found missing are remembered this long, so a client repeating a made-up name costs no store read.
#: Ids are chosen by the server and unguessable: no client can ask for one before it is created, so a
#: long memory refuses nothing real.
UNKNOWN_EPISODE_TTL = 60.0
#: Missing ids remembered at once: bounds what a client making up names can make this node hold.
UNKNOWN_EPISODES_MAX = 10_000


def may_follow(user_id: str, channel: str) -> bool:
    if channel == user_channel(user_id):
        return True
    if channel.startswith(_EPISODE_PREFIX):
        return ID_PATTERN.match(channel[len(_EPISODE_PREFIX):]) is not None
    return False


class _Lookup:
    """One store read of an episode id that every concurrent asker of that id waits for."""

    __slots__ = ("done", "found", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.found: bool | None = None  # None: the reader failed or was cancelled, ask again
        self.error: StoreUnavailable | None = None


class EpisodeDirectory:
    """``await exists(channel)``: whether a channel ``may_follow`` allowed can be followed.

    User channels always exist. An episode channel exists when ``lookup(episode_id)`` (a store read)
    says so; answers are cached (see the constants above), and concurrent askers of one id share one
    read: when a show starts, thousands of clients of a node subscribe to its channel at once.
    ``StoreUnavailable`` from the read reaches every asker of it; nothing is cached then.
    """

    def __init__(
        self,
        lookup: Callable[[str], Awaitable[bool]],
        *,
        known_max: int = KNOWN_EPISODES_MAX,
        unknown_ttl: float = UNKNOWN_EPISODE_TTL,
        unknown_max: int = UNKNOWN_EPISODES_MAX,
    ) -> None:
        self._lookup = lookup
        self._known_max = known_max
        self._unknown_ttl = unknown_ttl
        self._unknown_max = unknown_max
        self._known: dict[str, None] = {}  # insertion order = least recently asked first
        self._unknown: dict[str, float] = {}  # id → forget at; insertion order = expiry order
        self._reads: dict[str, _Lookup] = {}
        self.store_reads = 0

    async def exists(self, channel: str) -> bool:
        if not channel.startswith(_EPISODE_PREFIX):
            return True
        episode_id = channel[len(_EPISODE_PREFIX):]
        while True:
            cached = self._cached(episode_id)
            if cached is not None:
                await trio.lowlevel.checkpoint()
                return cached
            read = self._reads.get(episode_id)
            if read is None:
                return await self._read(episode_id)
            await read.done.wait()
            if read.error is not None:
                raise StoreUnavailable(str(read.error))
            if read.found is not None:
                return read.found

    def _cached(self, episode_id: str) -> bool | None:
        if episode_id in self._known:
            del self._known[episode_id]
            self._known[episode_id] = None
            return True
        now = trio.current_time()
        while self._unknown:
            first, forget_at = next(iter(self._unknown.items()))
            if forget_at > now:
                break
            del self._unknown[first]
        return False if episode_id in self._unknown else None

    async def _read(self, episode_id: str) -> bool:
        read = self._reads[episode_id] = _Lookup()
        try:
            self.store_reads += 1
            read.found = await self._lookup(episode_id)
            self._remember(episode_id, read.found)
            return read.found
        except StoreUnavailable as exc:
            read.error = exc
            raise
        finally:
            del self._reads[episode_id]
            read.done.set()

    def _remember(self, episode_id: str, found: bool) -> None:
        if found:
            self._known[episode_id] = None
            if len(self._known) > self._known_max:
                del self._known[next(iter(self._known))]
        else:
            self._unknown[episode_id] = trio.current_time() + self._unknown_ttl
            if len(self._unknown) > self._unknown_max:
                del self._unknown[next(iter(self._unknown))]
