"""REST bodies of docs/api.md as msgspec Structs: requests are validated on decode, responses encode faithfully.

Conventions (docs/architecture.md §6):

* Every Struct ignores unknown fields (msgspec's default), so old servers accept new clients' extra fields
  and old clients accept new servers' responses. New fields always get a default.
* ``kw_only=True`` on every class (msgspec applies it per class, not by inheritance): adding a field can
  never shift a positional argument of existing callers, and required fields may follow optional ones.
* Responses use ``omit_defaults`` only where docs/api.md leaves a field out when it has no value (e.g. an
  interaction's ``correct`` before reveal). Fields docs/api.md shows as ``null`` (``current``, ``correct`` of
  results, ``me.rank``) have no default, so they are always encoded, as ``null`` when empty.
* What msgspec can check (types, enums, lengths, ranges) is checked while decoding; cross-field rules live
  in :func:`check_interaction` so that every server applies the same ones.

Request decoders are built once at import (``*_decoder``, see :mod:`.decoding`); :func:`decode_request`
wraps one and turns any failure into the contract's 400.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta

from .decoding import JsonDecoder
from .errors import ApiError, ErrorCode, bad_request
from .kinds import KIND_NAMES, MAX_OPTIONS, spec

# Also importable from here, where clients of this package have always found them.
from .kinds import MAX_SCALE_VALUES as MAX_SCALE_VALUES
from .kinds import SCORED_KINDS as SCORED_KINDS
from .text import DisplayText

# -- shared constraints ------------------------------------------------------------------------------------

#: Ids chosen by clients (option ids, friend user ids) end up in keys and URLs: URL-safe, short.
ID_REGEX = r"^[A-Za-z0-9_.:-]+$"
Id = Annotated[str, Meta(min_length=1, max_length=128, pattern=ID_REGEX)]
OptionId = Annotated[str, Meta(min_length=1, max_length=64, pattern=ID_REGEX)]

#: Texts other people read are display texts (protocol.text): no control or bidirectional override characters.
Title = Annotated[DisplayText, Meta(min_length=1, max_length=200)]
Prompt = Annotated[DisplayText, Meta(min_length=1, max_length=500)]
Label = Annotated[DisplayText, Meta(min_length=1, max_length=200)]
Name = Annotated[DisplayText, Meta(min_length=1, max_length=64)]


def clean_name(name: str) -> str:
    """A display name without its surrounding spaces (the characters are checked by ``DisplayText``);
    ``ValueError`` (→ 400 ``bad_request`` when raised while decoding) if nothing is left."""
    stripped = name.strip()
    if not stripped:
        raise ValueError("name: must not be blank")
    return stripped
#: An interaction stays open at most an hour: longer is a mistake, and it bounds scheduler state.
Duration = Annotated[float, Meta(gt=0, le=3600)]
Points = Annotated[int, Meta(ge=0, le=100_000)]
#: Unix seconds. Bounded so a typo (milliseconds) is a 400, not an episode in the year 55,000.
Timestamp = Annotated[float, Meta(ge=0, le=1e10)]
#: A ticket is at most 1 KiB (playtotv.credentials rejects longer ones before decoding anything).
TicketText = Annotated[str, Meta(min_length=1, max_length=1024)]

if TYPE_CHECKING:
    Kind = str
else:
    #: The kinds of protocol.kinds' table, as an enum on the wire (decoding refuses any other name).
    Kind = Literal[KIND_NAMES]
Mode = Literal["live", "prerecorded"]
EpisodeStatus = Literal["scheduled", "live", "ended"]
InteractionStatus = Literal["draft", "open", "closed", "revealed"]
#: An answer: an option id, or an integer for ratings.
Choice = Annotated[str, Meta(min_length=1, max_length=64)] | int

DEFAULT_DURATION = 15.0
DEFAULT_POINTS = 1000
#: A prerecorded episode's timeline: enough for any show, small enough to validate in one request.
MAX_TIMELINE_ENTRIES = 500


class _Body(msgspec.Struct, kw_only=True):
    """Base of every body: keyword-only; unknown fields ignored (msgspec's default, kept on purpose)."""


class _Sparse(_Body, omit_defaults=True, kw_only=True):  # omit_defaults *is* inherited
    """Base of bodies whose optional fields docs/api.md leaves out when unset."""


# -- gatekeeper --------------------------------------------------------------------------------------------

class SessionRequest(_Body, kw_only=True):
    """``POST /v1/session``; every field optional, an empty object is a valid request."""

    user_id: Id | None = None
    resume: TicketText | None = None
    name: Name | None = None  # the viewer's display name (a resume with one renames)
    # Free strings, not a Literal: a client naming a transport this server does not know yet (say "sse")
    # must still be admitted; the gatekeeper lists the ones it has, in the client's order.
    transports: Annotated[list[Annotated[str, Meta(max_length=32)]], Meta(max_length=8)] | None = None

    def __post_init__(self) -> None:
        if self.name is not None:
            self.name = clean_name(self.name)


class PushEndpoints(_Sparse, kw_only=True):
    """One push node's URLs; a transport the client did not ask for may be left out."""

    websocket: str | None = None
    polling: str | None = None


class SessionResponse(_Body, kw_only=True):
    ticket: str
    user_id: str
    expires_at: float
    server_time: float
    core: list[str]
    push: list[PushEndpoints]
    max_rtt_ms: int


class NodeCounts(_Body, kw_only=True):
    core: int = 0
    push: int = 0
    worker: int = 0
    scheduler: int = 0


class GatekeeperStatus(_Body, kw_only=True):
    """``GET /v1/status``."""

    admitted: int
    capacity: int
    licensed_capacity: int
    qos_capacity: int
    at_capacity: bool
    nodes: NodeCounts


# -- shows and episodes ----------------------------------------------------------------------------------

class CreateShow(_Body, kw_only=True):
    title: Title


class Show(_Body, kw_only=True):
    id: str
    title: str


class Option(_Body, kw_only=True):
    id: OptionId
    label: Label


class InteractionBody(_Body, kw_only=True):
    """What a director sends to create an interaction (and what a timeline entry holds).

    Per-kind rules (options or a scale, ``correct`` given or refused, unique option ids) need several
    fields at once: :func:`check_interaction` applies them, as protocol.kinds' table says.
    """

    kind: Kind
    prompt: Prompt
    options: Annotated[list[Option], Meta(max_length=MAX_OPTIONS)] = []
    correct: OptionId | None = None
    scale: tuple[int, int] | None = None
    duration: Duration = DEFAULT_DURATION
    points: Points = DEFAULT_POINTS


class TimelineEntry(_Body, kw_only=True):
    at: Annotated[float, Meta(ge=0, le=86_400)]  # seconds from the broadcast start; a day at most
    interaction: InteractionBody


class CreateEpisode(_Body, kw_only=True):
    title: Title
    mode: Mode = "live"
    starts_at: Timestamp | None = None
    timeline: Annotated[list[TimelineEntry], Meta(max_length=MAX_TIMELINE_ENTRIES)] = []


#: "HH:MM", 24-hour, UTC: when each episode of a series starts.
TimeOfDay = Annotated[str, Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
#: Episodes a series may produce: a weekly show for 20 years, a daily one for 1.
MAX_SERIES_EPISODES = 1000


class CreateSeries(_Body, kw_only=True):
    """``POST /v1/shows/{show_id}/series`` (docs/api.md §4.4): a recurring show ("every Friday at
    20:00 UTC") whose episodes are created from this template, each with its ``starts_at`` and timeline,
    ahead of air time; prerecorded ones then start and fire by themselves."""

    title: Title  # each episode is titled "<title> <YYYY-MM-DD>"
    time: TimeOfDay
    weekday: Annotated[int, Meta(ge=0, le=6)] | None = None  # 0 = Monday; None: every day
    mode: Mode = "prerecorded"
    timeline: Annotated[list[TimelineEntry], Meta(max_length=MAX_TIMELINE_ENTRIES)] = []
    first_after: Timestamp | None = None  # no episode before this (default: creation time)
    episodes: Annotated[int, Meta(ge=1, le=MAX_SERIES_EPISODES)] | None = None  # default: no end


class Series(_Body, kw_only=True):
    id: str
    show_id: str
    title: str
    time: str
    weekday: int | None
    mode: Mode
    episodes: int | None
    #: Episodes created so far (the next ones are created ahead of their air time).
    created: list[str] = []


class InteractionView(_Sparse, kw_only=True):
    """An interaction as clients see it. ``correct`` is omitted until revealed (docs/api.md), so a server builds
    this without it for viewers; ``opens_at`` / ``closes_at`` appear once the interaction was opened."""

    id: str
    episode_id: str
    kind: Kind
    prompt: str
    status: InteractionStatus
    options: list[Option] = []
    scale: tuple[int, int] | None = None
    duration: float = DEFAULT_DURATION
    points: int | None = None
    correct: str | None = None
    opens_at: float | None = None
    closes_at: float | None = None


class TimelineItem(_Body, kw_only=True):
    """A created timeline entry: when it fires and the interaction it created."""

    at: float
    interaction_id: str


class EpisodeView(_Sparse, kw_only=True):
    """``GET /v1/episodes/{id}``, and the "episode" the director endpoints return.

    ``current`` and ``server_time`` have no default: docs/api.md shows ``"current": null`` explicitly.
    """

    id: str
    show_id: str
    title: str
    mode: Mode
    status: EpisodeStatus
    channel: str
    current: InteractionView | None
    server_time: float
    starts_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    timeline: list[TimelineItem] = []


# -- director actions --------------------------------------------------------------------------------------

class OpenInteraction(_Body, kw_only=True):
    duration: Duration | None = None  # overrides the interaction's own duration for this opening


class CloseInteraction(_Body, kw_only=True):
    pass


class RevealInteraction(_Body, kw_only=True):
    correct: OptionId | None = None  # needed for predictions


class StartEpisode(_Body, kw_only=True):
    at: Timestamp | None = None  # prerecorded: when the broadcast started; the timeline runs from it


class EndEpisode(_Body, kw_only=True):
    pass


class DirectorEvent(_Body, kw_only=True):
    """``POST /v1/episodes/{id}/events``; pushed to the episode channel as ``director.event``."""

    type: Annotated[str, Meta(min_length=1, max_length=64)]
    data: dict[str, Any] = {}


class Accepted(_Body, kw_only=True):
    """The 202 body of endpoints that queue work (``events``)."""

    accepted: bool = True


class InteractionStats(_Body, kw_only=True):
    interaction_id: str
    kind: Kind
    status: InteractionStatus
    answers: int
    counts: dict[str, int]


class EpisodeStats(_Body, kw_only=True):
    """``GET /v1/episodes/{id}/stats``: live figures, best effort."""

    episode_id: str
    viewers: int
    answers: int
    interactions: list[InteractionStats]
    server_time: float


# -- viewer ------------------------------------------------------------------------------------------------

class AnswerRequest(_Body, kw_only=True):
    choice: Choice


class AnswerAccepted(_Body, kw_only=True):
    accepted: bool = True
    received_at: float


class Results(_Sparse, kw_only=True):
    """``GET /v1/interactions/{id}/results``. Count keys are option ids, or rating values as strings.

    ``correct`` is always encoded (``null`` for polls, votes, ratings and unrevealed predictions);
    ``average`` only for ratings.
    """

    total: int
    counts: dict[str, int]
    percent: dict[str, float]
    correct: str | None
    average: float | None = None


class FriendChoice(_Sparse, kw_only=True):
    user_id: str
    name: str
    choice: str | int
    received_at: float | None = None


class FriendsChoices(_Body, kw_only=True):
    """``GET /v1/interactions/{id}/friends``: the choices of the caller's friends who answered.

    While a quiz or prediction is open, friends' choices are shown only to a caller who has answered it:
    until then ``friends`` is empty and ``hidden`` true (anyone may follow a top player, so showing them
    would let anyone copy their answers). Polls, votes and ratings show them at any time.
    """

    interaction_id: str
    friends: list[FriendChoice]
    hidden: bool = False


class LeaderboardEntry(_Body, kw_only=True):
    rank: int
    user_id: str
    name: str
    score: int


class LeaderboardMe(_Body, kw_only=True):
    rank: int | None  # null while the caller has no score in this scope
    score: int


class Leaderboard(_Body, kw_only=True):
    entries: list[LeaderboardEntry]
    me: LeaderboardMe | None  # null for a director key, which is nobody on the board
    scope: Literal["global", "friends"] = "global"


class Achievement(_Sparse, kw_only=True):
    id: str
    title: str = ""
    earned_at: float | None = None


class Profile(_Body, kw_only=True):
    """``GET`` / ``PUT /v1/me``."""

    user_id: str
    name: str
    score: int
    achievements: list[Achievement] = []
    lifetime_points: int = 0
    tier: str = ""
    friends: int = 0
    answers: int = 0
    correct_answers: int = 0


class UpdateProfile(_Body, kw_only=True):
    name: Name

    def __post_init__(self) -> None:
        self.name = clean_name(self.name)


class AddFriend(_Body, kw_only=True):
    user_id: Id


class Friend(_Sparse, kw_only=True):
    user_id: str
    name: str = ""
    since: float | None = None


class FriendList(_Body, kw_only=True):
    friends: list[Friend]


class Notification(_Sparse, tag="notification", tag_field="type", kw_only=True):
    """One notification. The same Struct is the user channel's ``notification`` message data
    (protocol.push), so REST and push carry one shape, ``"type": "notification"`` included.

    ``kind`` is an open set (docs/api.md: ``achievement | friend_answered | friend_joined | friend_beat_you |
    ...``): a plain string so that clients keep decoding when a kind is added. The detail fields that
    apply to a kind are set, the others omitted.
    """

    id: str
    kind: str
    created_at: float
    message: str = ""
    user_id: str | None = None  # the friend concerned
    name: str | None = None
    episode_id: str | None = None
    interaction_id: str | None = None
    achievement: Achievement | None = None
    points: int | None = None


class NotificationList(_Body, kw_only=True):
    """``GET /v1/me/notifications?since=<cursor>``; pass ``cursor`` back as ``since`` to get newer ones."""

    notifications: list[Notification]
    cursor: str


# -- health --------------------------------------------------------------------------------------------------

class Health(_Sparse, kw_only=True):
    """``/healthz``: the process is alive; ``node`` is its node id."""

    status: Literal["ok", "ready", "not_ready"]
    checks: dict[str, bool] = {}
    node: str | None = None


class Readiness(_Body, kw_only=True):
    """``/readyz``, 200 when ``ready`` else 503: ``checks`` names each dependency (and the node's
    registration) and whether it answered; ``draining`` once the node stops taking new work."""

    ready: bool
    checks: dict[str, bool]
    draining: bool


# -- cross-field rules ---------------------------------------------------------------------------------------

def check_interaction(body: InteractionBody) -> None:
    """Apply the per-kind rules of docs/api.md's interaction body (protocol.kinds); raise a 400 ``ApiError``
    naming the rule. Kept here (pure, no I/O) so that a director POST and a timeline entry are judged
    identically."""
    spec(body.kind).check_definition([option.id for option in body.options], body.scale, body.correct)


def check_choice(interaction: InteractionView, choice: str | int) -> None:
    """Raise 422 ``invalid_choice`` unless ``choice`` fits the interaction: an option id, or a scale value."""
    spec(interaction.kind).check_choice([option.id for option in interaction.options], interaction.scale, choice)


# -- decoders ------------------------------------------------------------------------------------------------

session_request_decoder = JsonDecoder(SessionRequest)
create_show_decoder = JsonDecoder(CreateShow)
create_episode_decoder = JsonDecoder(CreateEpisode)
interaction_body_decoder = JsonDecoder(InteractionBody)
open_interaction_decoder = JsonDecoder(OpenInteraction)
close_interaction_decoder = JsonDecoder(CloseInteraction)
reveal_interaction_decoder = JsonDecoder(RevealInteraction)
start_episode_decoder = JsonDecoder(StartEpisode)
end_episode_decoder = JsonDecoder(EndEpisode)
director_event_decoder = JsonDecoder(DirectorEvent)
answer_request_decoder = JsonDecoder(AnswerRequest)
update_profile_decoder = JsonDecoder(UpdateProfile)
add_friend_decoder = JsonDecoder(AddFriend)
create_series_decoder = JsonDecoder(CreateSeries)

#: Bodies larger than this are refused before decoding (docs/api.md: "body too large" is a 400). A timeline of
#: MAX_TIMELINE_ENTRIES full interactions fits; nothing else comes close.
MAX_BODY_BYTES = 1024 * 1024

T = TypeVar("T")


def decode_request(decoder: JsonDecoder[T], body: bytes) -> T:
    """Decode a request body, treating an empty body as ``{}`` (docs/api.md lets ``{}`` bodies be left out).

    Any failure, too large included, is raised as the contract's 400 ``bad_request``.
    """
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(ErrorCode.BAD_REQUEST, f"body larger than {MAX_BODY_BYTES} bytes")
    if not body.strip():
        body = b"{}"
    try:
        return decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise bad_request(exc) from None
