"""Answers on the WebSocket (docs/api.md §5.1): the checks, rate limit, dedupe and enqueue of core's
``POST /v1/interactions/{id}/answers``, without an HTTP request per answer.

Validation needs the interaction. :class:`InteractionBook` knows those whose ``interaction.opened`` /
``interaction.closed`` this node fanned out (the hub's observer), and trusts what it learned while the
node still follows that episode channel without an unfilled gap: a close reaches it with the message that
tells viewers. Any other interaction is read through the process's interaction cache (the store, single
flight, ``gameplay.cache.INTERACTION_TTL``), as core reads it.

Dedupe and enqueue go through an ``AnswerBatcher`` of the node's own (``answers.durability`` as core's):
the dedupe key is the one core sets, per interaction and user, so an answer sent over both transports is
one answer, whichever arrives first.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec

from playtotv.gameplay import answers
from playtotv.gameplay.answers import AnswerBatcher, AnswerItem
from playtotv.gameplay.documents import InteractionDoc
from playtotv.gameplay.ratelimit import TokenBuckets
from playtotv.keys import ID_PATTERN, episode_channel
from playtotv.protocol.errors import ApiError
from playtotv.protocol.push import Answer, AnswerAcceptedFrame, InteractionClosed, InteractionOpened, encode_frame
from playtotv.store.base import StoreUnavailable

from .clientframes import error_frame

if TYPE_CHECKING:
    from .hub import ChannelState

#: Interactions learned from messages, kept (oldest first out) up to this many: a node follows a few
#: episodes, each with at most a few hundred interactions.
BOOK_MAX = 10_000

_EPISODE_PREFIX = episode_channel("")
# Message data is encoded by msgspec with its tag first: a prefix test skips every other message
# without decoding it (the observer sees every message the node fans out).
_OPENED = b'{"type":"interaction.opened"'
_CLOSED = b'{"type":"interaction.closed"'
_opened_decoder = msgspec.json.Decoder(InteractionOpened)
_closed_decoder = msgspec.json.Decoder(InteractionClosed)


class InteractionBook:
    """``await get(id)``: the interaction as this node knows it, or None when it does not exist."""

    def __init__(self, hub_channels: Callable[[], dict[str, ChannelState]],
                 load: Callable[[str], Awaitable[InteractionDoc | None]], *, max_entries: int = BOOK_MAX) -> None:
        self._channels = hub_channels
        self._load = load
        self._max = max_entries
        #: id → (the interaction, or None when only its close was seen; the channel state it came from)
        self._learned: dict[str, tuple[InteractionDoc | None, ChannelState]] = {}
        self.loads = 0

    # -- the hub's observer --------------------------------------------------------------------------
    def observe(self, state: ChannelState, data: bytes) -> None:
        if not state.name.startswith(_EPISODE_PREFIX):
            return
        try:
            if data.startswith(_OPENED):
                view = _opened_decoder.decode(data).interaction
                doc = InteractionDoc(id=view.id, episode_id=view.episode_id, kind=view.kind, prompt=view.prompt,
                                     options=list(view.options), scale=view.scale, duration=view.duration,
                                     points=view.points or 0, status=view.status, opens_at=view.opens_at,
                                     closes_at=view.closes_at)
                self._learn(doc.id, doc, state)
            elif data.startswith(_CLOSED):
                closed = _closed_decoder.decode(data)
                known = self._learned.get(closed.interaction_id)
                # Closed is all an answer needs to know (it is refused before its choice is looked at),
                # and it beats a cached read that may still say open: None stands for "closed".
                self._learn(closed.interaction_id,
                            None if known is None or known[0] is None
                            else msgspec.structs.replace(known[0], status="closed"), state)
        except msgspec.DecodeError:
            pass  # not ours to judge: the fan-out delivered it; a lookup will read the store instead

    def forget(self, state: ChannelState) -> None:
        for interaction_id in [i for i, (_, s) in self._learned.items() if s is state]:
            del self._learned[interaction_id]

    def _learn(self, interaction_id: str, doc: InteractionDoc | None, state: ChannelState) -> None:
        self._learned.pop(interaction_id, None)
        self._learned[interaction_id] = (doc, state)
        if len(self._learned) > self._max:
            del self._learned[next(iter(self._learned))]

    # -- lookups ---------------------------------------------------------------------------------------
    async def get(self, interaction_id: str) -> InteractionDoc | None:
        """Raises ApiError ``interaction_closed`` for one known only by its close."""
        known = self._learned.get(interaction_id)
        if known is not None:
            doc, state = known
            # Trusted while the node still follows that channel: a later close would have come through it.
            if self._channels().get(state.name) is state and state.error is None:
                if doc is None:
                    raise ApiError("interaction_closed", "the interaction is not open")
                return doc
            del self._learned[interaction_id]
        self.loads += 1
        return await self._load(interaction_id)


class AnswerDesk:
    """One node's answers: ``await answer(user_id, frame)`` is the frame to send back."""

    def __init__(self, book: InteractionBook, batcher: AnswerBatcher, limits: TokenBuckets,
                 clock: Callable[[], float] = time.time) -> None:
        self.book = book
        self.batcher = batcher
        self.limits = limits
        self.clock = clock

    async def answer(self, user_id: str, frame: Answer) -> bytes:
        try:
            received_at = await self._record(user_id, frame)
        except ApiError as e:
            return error_frame(e.code.value, e.message, frame.id, e.retry_after)
        return encode_frame(AnswerAcceptedFrame(id=frame.id, received_at=received_at))

    async def _record(self, user_id: str, frame: Answer) -> float:
        # The order of core's route: rate limit (with the credentials), then the id, the interaction, the choice.
        wait = self.limits.allow(user_id)
        if wait is not None:
            raise ApiError("rate_limited", "too many requests for this user", retry_after=round(wait, 3))
        if not ID_PATTERN.match(frame.interaction_id):
            raise ApiError("not_found", "unknown interaction")
        try:
            doc = await self.book.get(frame.interaction_id)
        except StoreUnavailable as e:
            raise ApiError("unavailable", f"interaction not readable now: {e}",
                           retry_after=answers.UNAVAILABLE_RETRY_AFTER) from None
        now = self.clock()
        doc = answers.validate(doc, frame.choice, now)
        item = AnswerItem(doc.id, doc.episode_id, user_id, frame.choice, now)
        if not await self.batcher.submit(item, answers.dedupe_ttl(doc, now)):
            raise ApiError("already_answered", "you already answered this interaction")
        return now

