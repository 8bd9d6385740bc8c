"""Stored documents of the domain as msgspec Structs, and their conversion to the wire views.

Structs rather than loose dicts so that a document read back is validated once, at the boundary, and the
rest of the code works with typed attributes. ``_id`` is the natural id (see ``ids``), so a retried write
of the same fact lands on the same document.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from playtotv import keys
from playtotv.protocol import kinds
from playtotv.protocol.rest import (
    EpisodeStatus,
    EpisodeView,
    InteractionStatus,
    InteractionView,
    Mode,
    Option,
    TimelineItem,
)

D = TypeVar("D", bound="_Doc")


class _Doc(msgspec.Struct, kw_only=True):
    id: str = msgspec.field(name="_id")


def to_doc(struct: _Doc) -> dict[str, Any]:
    return msgspec.to_builtins(struct)


def from_doc(doc: dict[str, Any], cls: type[D]) -> D:
    return msgspec.convert(doc, cls)


def from_docs(docs: list[dict[str, Any]], cls: type[D]) -> list[D]:
    return [msgspec.convert(doc, cls) for doc in docs]


class ShowDoc(_Doc, kw_only=True):
    title: str
    created_at: float


class EpisodeDoc(_Doc, kw_only=True):
    show_id: str
    title: str
    mode: Mode
    status: EpisodeStatus = "scheduled"  # scheduled → live → ended
    starts_at: float | None = None
    started_at: float | None = None
    #: When the episode actually went live (``started_at`` may lie in the past: a late start of a recording).
    went_live_at: float | None = None
    ended_at: float | None = None
    #: The interaction most recently opened (stays current through closed and revealed).
    current: str | None = None
    timeline: list[TimelineItem] = []
    #: The recurring series this episode was created from, if any.
    series_id: str | None = None
    created_at: float = 0.0
    #: Set when the end-of-episode job (last scoring pass, end achievements) has run.
    finished_at: float | None = None


class InteractionDoc(_Doc, kw_only=True):
    episode_id: str
    kind: str
    prompt: str
    options: list[Option] = []
    correct: str | None = None
    scale: tuple[int, int] | None = None
    duration: float
    points: int
    status: InteractionStatus = "draft"  # draft → open → closed → revealed
    opens_at: float | None = None
    closes_at: float | None = None
    #: When answers stopped being accepted: ``closes_at`` for a deadline close, earlier for a director's.
    closed_at: float | None = None
    revealed_at: float | None = None
    #: Set once the reveal's scoring pass finished (answers processed later trigger another pass).
    scored_at: float | None = None
    #: Seconds from the broadcast start, for interactions created from a prerecorded timeline.
    timeline_at: float | None = None
    #: Set once ``interaction.opened`` was published: an open interaction without it was opened by an actor
    #: that died before announcing it, and the scheduler announces it again (a transactional outbox in one
    #: field: the state change and the message cannot be one atomic write).
    announced_at: float | None = None
    created_at: float = 0.0

    @property
    def spec(self) -> kinds.KindSpec:
        """How this kind behaves (protocol.kinds)."""
        return kinds.spec(self.kind)

    @property
    def scored(self) -> bool:
        return self.spec.scored

    def option_ids(self) -> list[str]:
        return [option.id for option in self.options]

    def choices(self) -> list[str]:
        """Every possible answer as the string that keys counts (option ids, or scale values)."""
        return self.spec.choice_keys(self.option_ids(), self.scale)

    def accepts_answers(self, now: float) -> bool:
        return self.status == "open" and self.closes_at is not None and now < self.closes_at


class AnswerDoc(_Doc, kw_only=True):
    interaction_id: str
    episode_id: str
    user_id: str
    choice: str | int
    received_at: float
    #: ``ids.scoring_part(user_id)``: which scoring chunk the answer belongs to (None: stored before parts
    #: existed, scored only by a whole-episode pass).
    part: int | None = None


class ScoreDoc(_Doc, kw_only=True):
    """One user's standing in one episode; written only by the scorer (under the episode's lease)."""

    episode_id: str
    user_id: str
    score: int = 0
    #: Consecutive correct answers ending with the last one scored (the streak bonus counts from it).
    streak: int = 0
    best_streak: int = 0
    answered: int = 0
    correct: int = 0
    #: Interactions already scored for this user: a redelivered or repeated pass skips them.
    awarded: list[str] = []
    updated_at: float = 0.0


class UserDoc(_Doc, kw_only=True):
    name: str
    #: When ``name`` was chosen (a rename's time, or the issue time of the ticket that carried it): a
    #: ticket issued earlier, seen by a core for the first time, does not undo a later choice.
    name_set_at: float = 0.0
    created_at: float = 0.0
    #: Bumped by every change, so read-modify-write updates can compare-and-set on it.
    version: int = 0
    first_answer_at: float | None = None
    #: Episodes the user answered in (for "five episodes played"; bounded by ``MAX_EPISODES_KEPT``).
    episodes: list[str] = []
    #: How many follow this user. A hint kept slightly high on failures (incremented before the follow is
    #: written, decremented after it is removed): it only decides whether to look for followers to notify.
    followers: int = 0


class FollowDoc(_Doc, kw_only=True):
    follower: str
    followee: str
    since: float


class AchievementDoc(_Doc, kw_only=True):
    user_id: str
    achievement: str
    earned_at: float
    episode_id: str | None = None


def default_name(user_id: str) -> str:
    """Until a viewer picks a name, show something stable and recognisable."""
    return f"Viewer {user_id[-4:]}"


def interaction_view(doc: InteractionDoc, *, with_correct: bool) -> InteractionView:
    """The wire view. ``correct`` only when revealed or for directors (docs/api.md: not before reveal)."""
    return InteractionView(
        id=doc.id,
        episode_id=doc.episode_id,
        kind=doc.kind,
        prompt=doc.prompt,
        status=doc.status,
        options=list(doc.options),
        scale=doc.scale,
        duration=doc.duration,
        points=doc.points if doc.scored else None,
        correct=doc.correct if (with_correct or doc.status == "revealed") else None,
        opens_at=doc.opens_at,
        closes_at=doc.closes_at,
    )


def episode_view(doc: EpisodeDoc, current: InteractionDoc | None, now: float, *, director: bool) -> EpisodeView:
    return EpisodeView(
        id=doc.id,
        show_id=doc.show_id,
        title=doc.title,
        mode=doc.mode,
        status=doc.status,
        channel=keys.episode_channel(doc.id),
        current=interaction_view(current, with_correct=director) if current is not None else None,
        server_time=now,
        starts_at=doc.starts_at,
        started_at=doc.started_at,
        ended_at=doc.ended_at,
        timeline=list(doc.timeline),
    )
