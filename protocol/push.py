"""The push protocol (docs/api.md §5): WebSocket frames, the long-poll response, and message data types.

Three tagged unions, all on ``"type"``:

* :data:`ClientFrame` — what a client sends (``subscribe``, ``unsubscribe``, ``ping``, ``answer``); decode with
  :data:`client_frame_decoder` after checking the frame is at most :data:`MAX_CLIENT_FRAME_BYTES`.
* :data:`ServerFrame` — what the server sends (``subscribed``, ``message``, ``pong``, ``error``,
  ``reconnect``, ``answer.accepted``); clients decode with :data:`server_frame_decoder`.
* :data:`MessageData` — the ``data`` of a ``message`` (``interaction.opened``, ``score.updated``, ...).

A ``message`` frame's ``data`` is :class:`msgspec.Raw`: the publisher encodes the data once, the broker
stores and forwards those bytes, and the push server splices them into frames with
:func:`encode_message_frame` without decoding or re-encoding (docs/architecture.md §5, fan-out). A client decodes
``data`` with :data:`message_data_decoder` when it wants typed access.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from .decoding import JsonDecoder
from .rest import Choice, InteractionView, LeaderboardEntry, Notification, Results

#: Client frames are tiny (a subscribe is < 200 bytes); anything much larger is abuse, refused before
#: decoding so a client cannot make the server parse megabytes.
MAX_CLIENT_FRAME_BYTES = 4096

#: ``episode:<id>`` or ``user:<id>`` (and room for future kinds). Validated on decode because the channel
#: name reaches broker keys (docs/architecture.md §7); *which* channels a client may follow is the server's decision.
CHANNEL_REGEX = r"^[a-z]+:[A-Za-z0-9_.:-]+$"
Channel = Annotated[str, Meta(min_length=3, max_length=160, pattern=CHANNEL_REGEX)]
Epoch = Annotated[str, Meta(max_length=64)]
Offset = Annotated[int, Meta(ge=0)]
#: The client's own name for a request (``answer``), echoed in the reply that settles it.
RequestId = Annotated[str, Meta(min_length=1, max_length=64)]
#: Checked against the id pattern by the server (an id that cannot exist is ``not_found``, as over REST).
InteractionId = Annotated[str, Meta(min_length=1, max_length=128)]


class _Frame(msgspec.Struct, tag_field="type", kw_only=True):
    """Base of every frame and message data type: tagged on ``type``, keyword-only, unknown fields
    ignored (new fields get defaults, docs/architecture.md §6)."""


# -- client → server ---------------------------------------------------------------------------------------

class Since(msgspec.Struct, kw_only=True):
    """The last message a client saw on a channel: the server replays what came after it."""

    epoch: Epoch
    offset: Offset


class Subscribe(_Frame, tag="subscribe", kw_only=True):
    channel: Channel
    since: Since | None = None


class Unsubscribe(_Frame, tag="unsubscribe", kw_only=True):
    channel: Channel


class Ping(_Frame, tag="ping", kw_only=True):
    pass


class Answer(_Frame, tag="answer", kw_only=True):
    """An answer sent on the WebSocket (docs/api.md §5.1), the same answer as ``POST
    /v1/interactions/{id}/answers``: settled by ``answer.accepted`` or ``error`` carrying the same ``id``.
    Both transports share one dedupe key per interaction and user, so a retry over the other one is never
    counted twice."""

    id: RequestId
    interaction_id: InteractionId
    choice: Choice


ClientFrame = Subscribe | Unsubscribe | Ping | Answer

client_frame_decoder: JsonDecoder[ClientFrame] = JsonDecoder(ClientFrame)


# -- server → client ---------------------------------------------------------------------------------------

class Message(_Frame, tag="message", kw_only=True):
    """One message on a channel. ``offset`` grows by one per message; ``epoch`` changes when the channel's
    history was lost. Field order here is the byte order :func:`encode_message_frame` produces."""

    channel: str
    epoch: str
    offset: int
    sent_at: float
    data: msgspec.Raw


class Subscribed(_Frame, tag="subscribed", kw_only=True):
    """Reply to ``subscribe``. ``recovered: false`` means the gap since ``since`` could not be filled
    (history trimmed or epoch changed): the client reloads state over REST."""

    channel: str
    epoch: str
    offset: int
    recovered: bool
    missed: list[Message] = []


class Pong(_Frame, tag="pong", kw_only=True):
    server_time: float


class ErrorFrame(_Frame, tag="error", omit_defaults=True, kw_only=True):
    """``code`` is one of the REST error codes (protocol.errors.ErrorCode), e.g. ``bad_request`` for a frame
    that fails validation, ``forbidden`` for a channel the client may not follow. ``id`` names the
    ``answer`` it settles (left out for other frames); ``retry_after`` is there where retrying makes
    sense (``rate_limited``, ``unavailable``)."""

    code: str
    message: str = ""
    id: str | None = None
    retry_after: float | None = None


class AnswerAcceptedFrame(_Frame, tag="answer.accepted", kw_only=True):
    """The ``answer`` with this ``id`` is recorded (what a 202 promises, ``answers.durability``);
    ``received_at`` as in the REST 202."""

    id: str
    received_at: float


class Reconnect(_Frame, tag="reconnect", kw_only=True):
    """The node is draining or the client is too slow: reconnect (through the gatekeeper's list) after
    ``after`` seconds."""

    after: float


ServerFrame = Subscribed | Message | Pong | ErrorFrame | Reconnect | AnswerAcceptedFrame

server_frame_decoder = msgspec.json.Decoder(ServerFrame)


class PollResponse(msgspec.Struct, kw_only=True):
    """``GET /v1/poll``: like ``subscribed``, ``messages`` are the ``message`` frames after ``offset``."""

    channel: str
    epoch: str
    offset: int
    recovered: bool
    messages: list[Message] = []


poll_response_decoder = msgspec.json.Decoder(PollResponse)


# -- message data: episode channel ---------------------------------------------------------------------------

class _Data(_Frame, omit_defaults=True, kw_only=True):
    """Base of message data: optional details are left out when unset, keeping fan-out frames small."""


class EpisodeStarted(_Data, tag="episode.started", kw_only=True):
    episode_id: str
    started_at: float | None = None


class EpisodeEnded(_Data, tag="episode.ended", kw_only=True):
    episode_id: str
    ended_at: float | None = None


class InteractionOpened(_Data, tag="interaction.opened", kw_only=True):
    interaction: InteractionView  # built without ``correct``: the viewer must not see it before reveal
    #: Seconds after its timecode that a timeline entry fired (a late start or a scheduler takeover).
    late_by: float = 0.0


class InteractionClosed(_Data, tag="interaction.closed", kw_only=True):
    interaction_id: str
    closed_at: float | None = None


class ScoringRule(msgspec.Struct, kw_only=True):
    """The scoring formula's parameters (docs/api.md §4.5), carried so a client computes its points with
    the values the workers use (``playtotv.points.Rule``)."""

    full_points_window: float
    streak_step: float
    streak_cap: float


class InteractionRevealed(_Data, tag="interaction.revealed", kw_only=True):
    """For scored kinds it also carries what a client needs to compute its own points exactly
    (``playtotv.points``): the interaction's ``points``, ``duration``, ``opens_at``, ``closed_at`` (answers
    received from then on do not count) and ``scoring``; unset for kinds that earn nothing."""

    interaction_id: str
    correct: str | None  # no default: encoded as null for kinds without a correct answer
    results: Results
    points: int | None = None
    duration: float | None = None
    opens_at: float | None = None
    closed_at: float | None = None
    revealed_at: float | None = None
    scoring: ScoringRule | None = None


class StatsUpdated(_Data, tag="stats.updated", kw_only=True):
    """Best effort, at most a few per second per interaction."""

    interaction_id: str
    counts: dict[str, int]
    total: int


class ScoreDistribution(msgspec.Struct, kw_only=True):
    """The spread of the episode's totals, for "top 7 %" without asking: ``at_least[i]`` is the lowest
    total among the best ``top[i]`` percent of the ``players`` (that share rounded down; shares under one
    player left out; ``top`` ascending, ending at 100). A client with total T is in the top ``top[i]`` %
    for the first i with ``at_least[i] <= T`` (``playtotv.points.top_percent``)."""

    players: int
    top: list[float]
    at_least: list[int]


class LeaderboardUpdated(_Data, tag="leaderboard.updated", kw_only=True):
    """The board changed. ``entries`` carries the top of it when the publisher has it at hand, and
    ``distribution`` the spread of totals after a reveal; clients wanting their exact rank ask
    ``GET /v1/episodes/{id}/leaderboard``."""

    episode_id: str
    entries: list[LeaderboardEntry] = []
    distribution: ScoreDistribution | None = None


class DirectorEventData(_Data, tag="director.event", kw_only=True):
    event_type: str
    data: dict[str, Any] = {}


# -- message data: user channel ------------------------------------------------------------------------------

class ScoreUpdated(_Data, tag="score.updated", kw_only=True):
    """Not sent per reveal (that would be one message per answering viewer): clients compute their
    points from ``interaction.revealed`` (``playtotv.points``); kept for publishers that correct a score."""

    interaction_id: str
    points: int
    total: int
    rank: int | None  # no default: docs/api.md lists it; null while the rank is not known yet


# ``Notification`` (``type: "notification"``) is defined in protocol.rest, where the notification list
# also uses it, and re-exported here as the user channel's other data type.

MessageData = (
    EpisodeStarted
    | EpisodeEnded
    | InteractionOpened
    | InteractionClosed
    | InteractionRevealed
    | StatsUpdated
    | LeaderboardUpdated
    | DirectorEventData
    | ScoreUpdated
    | Notification
)

#: Decodes a message's ``data``. An unknown ``type`` raises ``msgspec.ValidationError``: clients should
#: skip such messages, since servers add data types over time.
message_data_decoder = msgspec.json.Decoder(MessageData)


# -- encoding ------------------------------------------------------------------------------------------------

_encoder = msgspec.json.Encoder()
_encode = _encoder.encode

#: Encodes any frame, data type or PollResponse (one Encoder reused: it keeps its internal buffer).
encode_frame = _encode


_MESSAGE_FRAME = b'{"type":"message","channel":%b,"epoch":%b,"offset":%d,"sent_at":%b,"data":%b}'


def encode_message_frame(channel: str, epoch: str, offset: int, sent_at: float, data_json: bytes) -> bytes:
    """The ``message`` frame for one publish, as bytes; the fan-out sends these same bytes to every client.

    ``data_json`` must be one valid JSON value (e.g. ``encode_frame(ScoreUpdated(...))``); it is spliced
    in as is. The result is byte-for-byte ``encode_frame(Message(...))``. Built by ``%``-formatting
    msgspec-encoded parts into a template: in timeit runs (noisy 2-CPU machine) it was the fastest or
    close to it, ~0.5-0.8 µs for an 88-byte data, against ~0.65-0.9 µs for encoding a ``Message`` around
    ``msgspec.Raw`` and ~1 µs for ``+`` concatenation; all are per publish, not per client. Strings and the
    float still go through msgspec, so any channel is escaped correctly and ``sent_at`` is encoded as
    msgspec would (``nan`` / ``inf`` become ``null``, never invalid JSON).
    """
    return _MESSAGE_FRAME % (_encode(channel), _encode(epoch), offset, _encode(sent_at), data_json)


def _frames_list(frames: list[bytes]) -> bytes:
    return b"[" + b",".join(frames) + b"]"


def encode_subscribed_frame(
    channel: str, epoch: str, offset: int, recovered: bool, missed_frames: list[bytes]
) -> bytes:
    """The ``subscribed`` frame, splicing ``message`` frames already built by :func:`encode_message_frame`
    (the push server keeps recent frames as bytes, so a resubscribe storm re-encodes nothing)."""
    return _position_with_frames(b'{"type":"subscribed","channel":', channel, epoch, offset, recovered,
                                 b',"missed":', missed_frames)


def encode_poll_response(
    channel: str, epoch: str, offset: int, recovered: bool, message_frames: list[bytes]
) -> bytes:
    """The long-poll body (:class:`PollResponse`), splicing pre-built ``message`` frames."""
    return _position_with_frames(b'{"channel":', channel, epoch, offset, recovered, b',"messages":', message_frames)


def _position_with_frames(
    head: bytes, channel: str, epoch: str, offset: int, recovered: bool, frames_key: bytes, frames: list[bytes]
) -> bytes:
    """``head`` + channel, epoch, offset, recovered, then ``frames_key`` + the spliced frames: the shape both
    the ``subscribed`` frame and the poll body share."""
    return b"".join(
        (
            head,
            _encode(channel),
            b',"epoch":',
            _encode(epoch),
            b',"offset":',
            b"%d" % offset,
            b',"recovered":',
            b"true" if recovered else b"false",
            frames_key,
            _frames_list(frames),
            b"}",
        )
    )
