"""The client side of the push protocol, sans-io (like h11): frames in, events out, no sockets.

:class:`PushClient` keeps, per channel, the last ``(epoch, offset)`` its user has seen and turns what the
server sends into events the application acts on:

* :class:`MessageReceived` — the next message of a channel, exactly once and in order;
* :class:`Resubscribe` — a gap was detected (an offset skipped, an epoch changed without notice): send
  ``frame`` (a ``subscribe`` with ``since``); messages of that channel are held back until the reply, whose
  ``missed`` list replays them (and everything up to the server's position) in order;
* :class:`StateLost` — the server could not fill a gap (``recovered: false``): reload over REST;
* :class:`Subscribed`, :class:`Pong`, :class:`ServerError`, :class:`ReconnectRequested`;
* :class:`AnswerAccepted` / :class:`AnswerFailed` — the reply to an ``answer`` frame (:meth:`PushClient.answer`),
  by its request id;
* duplicates are dropped silently (counted in ``duplicates``).

After a reconnect, send :meth:`PushClient.connection_made`'s frames: a ``subscribe`` with ``since`` for
every channel followed before, so nothing published while away is lost. Long polling uses the same
state: :meth:`poll_params` builds the query, :meth:`receive_poll` reads the answer.

Used by the SDK and by the load generators; the same logic drives WebSocket and polling clients, so both
see the same sequences. A frame that cannot be decoded raises :class:`RemoteProtocolError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from playtotv.protocol.push import (
    Answer,
    AnswerAcceptedFrame,
    ErrorFrame,
    Message,
    Ping,
    PollResponse,
    Reconnect,
    Since,
    Subscribe,
    Unsubscribe,
    encode_frame,
    poll_response_decoder,
    server_frame_decoder,
)
from playtotv.protocol.push import (
    Pong as PongFrame,
)
from playtotv.protocol.push import (
    Subscribed as SubscribedFrame,
)

_poll_list_decoder = msgspec.json.Decoder(list[PollResponse])


class RemoteProtocolError(Exception):
    """The server sent something this client cannot understand (the server is at fault)."""


# -- events ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class MessageReceived:
    channel: str
    epoch: str
    offset: int
    sent_at: float
    data: bytes  # the message's ``data`` as JSON; decode with protocol.push.message_data_decoder


@dataclass(frozen=True, slots=True)
class Subscribed:
    channel: str
    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class Resubscribe:
    """A gap: send ``frame`` (WebSocket). Polling clients need not: their next poll carries ``since``."""

    channel: str
    since: Since
    frame: bytes


@dataclass(frozen=True, slots=True)
class StateLost:
    """The server could not replay what was missed: reload this channel's state over REST."""

    channel: str
    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class Pong:
    server_time: float


@dataclass(frozen=True, slots=True)
class ServerError:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class ReconnectRequested:
    after: float


@dataclass(frozen=True, slots=True)
class AnswerAccepted:
    """The ``answer`` frame with this ``id`` is recorded (what a REST 202 promises)."""

    id: str
    received_at: float


@dataclass(frozen=True, slots=True)
class AnswerFailed:
    """The ``answer`` frame with this ``id`` was refused: ``code`` as the REST answer would give it."""

    id: str
    code: str
    message: str
    retry_after: float | None


Event = (MessageReceived | Subscribed | Resubscribe | StateLost | Pong | ServerError | ReconnectRequested
         | AnswerAccepted | AnswerFailed)


# -- state ----------------------------------------------------------------------------------------------------

@dataclass(slots=True)
class ChannelPosition:
    epoch: str | None = None  # None: no position yet (never subscribed, or waiting for the first reply)
    offset: int = 0
    #: ``subscribed`` replies still to come on this connection; until the last, live messages of the
    #: channel are ignored (the reply's ``missed`` replays them in order).
    awaiting: int = 0


@dataclass
class PushClient:
    """Per-channel positions of one client. ``user_id`` names the channel the server subscribes it to
    by itself (docs/api.md: ``user:<user_id>``), whose ``subscribed`` arrives unasked on every connection."""

    user_id: str | None = None
    channels: dict[str, ChannelPosition] = field(default_factory=dict)
    duplicates: int = 0

    @property
    def user_channel(self) -> str | None:
        return f"user:{self.user_id}" if self.user_id else None

    # -- frames to send ---------------------------------------------------------------------------------------
    def subscribe(self, channel: str) -> bytes:
        position = self.channels.setdefault(channel, ChannelPosition())
        position.awaiting += 1
        since = Since(epoch=position.epoch, offset=position.offset) if position.epoch is not None else None
        return encode_frame(Subscribe(channel=channel, since=since))

    def unsubscribe(self, channel: str) -> bytes:
        self.channels.pop(channel, None)
        return encode_frame(Unsubscribe(channel=channel))

    @staticmethod
    def ping() -> bytes:
        return encode_frame(Ping())

    @staticmethod
    def answer(request_id: str, interaction_id: str, choice: str | int) -> bytes:
        """An ``answer`` frame; its reply is an :class:`AnswerAccepted` or :class:`AnswerFailed` with
        ``request_id``."""
        return encode_frame(Answer(id=request_id, interaction_id=interaction_id, choice=choice))

    def connection_made(self) -> list[bytes]:
        """A (re)connected WebSocket: the frames to send first, re-subscribing with ``since`` to every
        channel followed (the user channel too, when a position for it is known)."""
        for position in self.channels.values():
            position.awaiting = 0
        own = self.user_channel
        if own is not None:
            self.channels.setdefault(own, ChannelPosition()).awaiting += 1  # the unasked reply
        return [self.subscribe(name) for name, position in list(self.channels.items())
                if name != own or position.epoch is not None]

    # -- frames received ---------------------------------------------------------------------------------------
    def receive(self, data: bytes | str) -> list[Event]:
        """Events for one WebSocket text frame from the server."""
        try:
            frame = server_frame_decoder.decode(data)
        except msgspec.DecodeError as e:
            raise RemoteProtocolError(f"undecodable server frame: {e}") from None
        match frame:
            case Message():
                return self._on_message(frame.channel, frame.epoch, frame.offset, frame.sent_at, bytes(frame.data))
            case SubscribedFrame():
                return self._on_position(frame.channel, frame.epoch, frame.offset, frame.recovered,
                                         frame.missed, reply=True)
            case PongFrame(server_time=t):
                return [Pong(t)]
            case ErrorFrame(code=code, message=message, id=None):
                return [ServerError(code, message)]
            case ErrorFrame(code=code, message=message, id=str(request_id), retry_after=retry_after):
                return [AnswerFailed(request_id, code, message, retry_after)]
            case Reconnect(after=after):
                return [ReconnectRequested(after)]
            case AnswerAcceptedFrame(id=request_id, received_at=received_at):
                return [AnswerAccepted(request_id, received_at)]
        raise RemoteProtocolError(f"unexpected frame {type(frame).__name__}")  # pragma: no cover

    def _on_message(self, channel: str, epoch: str, offset: int, sent_at: float, data: bytes) -> list[Event]:
        position = self.channels.get(channel)
        if position is None or position.awaiting:
            return []  # not followed (any more), or the pending reply will replay it
        if position.epoch is None:
            position.epoch, position.offset = epoch, offset
            return [MessageReceived(channel, epoch, offset, sent_at, data)]
        if epoch == position.epoch:
            if offset == position.offset + 1:
                position.offset = offset
                return [MessageReceived(channel, epoch, offset, sent_at, data)]
            if offset <= position.offset:
                self.duplicates += 1
                return []
        return [self._gap(channel)]

    def _gap(self, channel: str) -> Resubscribe:
        position = self.channels[channel]
        assert position.epoch is not None
        since = Since(epoch=position.epoch, offset=position.offset)
        return Resubscribe(channel, since, self.subscribe(channel))

    def _on_position(self, channel: str, epoch: str, offset: int, recovered: bool, missed: list[Message],
                     *, reply: bool) -> list[Event]:
        position = self.channels.get(channel)
        if position is None:
            if channel != self.user_channel:
                return []  # a late reply for a channel we unsubscribed from
            position = self.channels[channel] = ChannelPosition()
        if reply:
            position.awaiting = max(0, position.awaiting - 1)
        if not recovered:
            position.epoch, position.offset = epoch, offset
            return [StateLost(channel, epoch, offset)]
        events: list[Event] = []
        if position.epoch is None or position.epoch != epoch:
            # No position of ours in this epoch: the server's is where we start.
            position.epoch, position.offset = epoch, offset
            return [Subscribed(channel, epoch, offset)]
        for message in missed:
            if message.epoch != epoch:
                continue
            if message.offset == position.offset + 1:
                position.offset = message.offset
                events.append(MessageReceived(channel, message.epoch, message.offset, message.sent_at,
                                              bytes(message.data)))
            elif message.offset <= position.offset:
                self.duplicates += 1
        if offset > position.offset:
            if position.awaiting:
                return events  # a later reply (to our ``since``) fills the rest
            events.append(self._gap(channel))
            return events
        if reply:  # a poll answer that only confirms the position is not news
            events.append(Subscribed(channel, epoch, position.offset))
        return events

    # -- long polling ------------------------------------------------------------------------------------------
    def poll_params(self) -> list[tuple[str, str]]:
        """Query parameters for one ``GET /v1/poll`` over every followed channel (add ``ticket`` and
        ``timeout``). Channels without a position send empty ``epoch``/``offset``: the server answers at
        once with the current one."""
        params: list[tuple[str, str]] = []
        for name, position in self.channels.items():
            params.append(("channel", name))
            params.append(("epoch", position.epoch or ""))
            params.append(("offset", str(position.offset) if position.epoch is not None else ""))
        return params

    def receive_poll(self, body: bytes | str) -> list[Event]:
        """Events for one long-poll answer (one object, or a list of them for several channels)."""
        try:
            stripped = body.lstrip()
            is_list = stripped[:1] in (b"[", "[")
            answers = _poll_list_decoder.decode(body) if is_list else [poll_response_decoder.decode(body)]
        except msgspec.DecodeError as e:
            raise RemoteProtocolError(f"undecodable poll response: {e}") from None
        events: list[Event] = []
        for answer in answers:
            position = self.channels.get(answer.channel)
            if position is not None:
                position.awaiting = 0  # polling has no pending replies: every answer is complete
            for event in self._on_position(answer.channel, answer.epoch, answer.offset, answer.recovered,
                                           answer.messages, reply=False):
                if isinstance(event, Resubscribe):
                    # Nothing to send: the next poll carries ``since`` anyway.
                    self.channels[answer.channel].awaiting = 0
                else:
                    events.append(event)
        return events
