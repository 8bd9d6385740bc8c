"""Director actions: the episode and interaction state machines, and the messages each change publishes.

Episode: ``scheduled`` → ``live`` → ``ended``. Interaction: ``draft`` → ``open`` → ``closed`` →
``revealed``. Each transition is a compare-and-set on the stored status, so two actors racing (a director
clicking close while the scheduler closes at the deadline, two cores handling a retried request) change
the state once, and only the winner publishes the message.

Repeating an action that already happened is a no-op answering 200 (docs/api.md), and it re-sends what the
first attempt may not have finished sending (its message, its follow-up job): a director who retries
after a 503 heals a half-done transition. Subscribers tolerate a repeated state message
(``interaction.opened`` is never repeated: it goes out behind a marker, see ``_announce``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from playtotv.gameplay import ids, jobs, publish, results, schema, score_formula
from playtotv.gameplay.documents import (
    EpisodeDoc,
    InteractionDoc,
    ShowDoc,
    episode_view,
    from_doc,
    interaction_view,
    to_doc,
)
from playtotv.gameplay.service import Gameplay
from playtotv.protocol.errors import ApiError
from playtotv.protocol.kinds import spec
from playtotv.protocol.push import (
    DirectorEventData,
    EpisodeEnded,
    EpisodeStarted,
    InteractionClosed,
    InteractionOpened,
    InteractionRevealed,
    ScoringRule,
)
from playtotv.protocol.rest import (
    CreateEpisode,
    CreateShow,
    EpisodeView,
    InteractionBody,
    InteractionView,
    Results,
    Show,
    TimelineItem,
    check_interaction,
)

#: How long the marker that makes ``interaction.opened`` go out once is kept: an interaction opens once,
#: so it only has to outlast any repeat of the open (a retried click, a successor's takeover: seconds).
OPENED_MARKER_TTL = 24 * 3600.0
#: Open interactions closed per scheduler tick; more wait for the next tick (0.2 s later).
CLOSE_BATCH = 100


def _not_found(what: str) -> ApiError:
    return ApiError("not_found", f"unknown {what}")


# -- creation -----------------------------------------------------------------------------------------
async def create_show(gameplay: Gameplay, body: CreateShow) -> Show:
    doc = ShowDoc(id=ids.new_id("s"), title=body.title, created_at=gameplay.clock())
    await gameplay.store.insert(schema.SHOWS, to_doc(doc))
    return Show(id=doc.id, title=doc.title)


def new_interaction(gameplay: Gameplay, episode_id: str, body: InteractionBody, timeline_at: float | None = None
                     ) -> InteractionDoc:
    check_interaction(body)
    return InteractionDoc(
        id=ids.new_id("i"), episode_id=episode_id, kind=body.kind, prompt=body.prompt, options=list(body.options),
        correct=body.correct, scale=body.scale, duration=body.duration,
        points=body.points if spec(body.kind).scored else 0, timeline_at=timeline_at, created_at=gameplay.clock(),
    )


async def create_episode(gameplay: Gameplay, show_id: str, body: CreateEpisode) -> EpisodeView:
    if await gameplay.show(show_id) is None:
        raise _not_found("show")
    episode_id = ids.new_id("e")
    # Validate every timeline entry before writing anything: a bad entry is a 400 with nothing stored.
    planned = [new_interaction(gameplay, episode_id, entry.interaction, entry.at) for entry in body.timeline]
    for doc in planned:
        await gameplay.store.insert(schema.INTERACTIONS, to_doc(doc))
    episode = EpisodeDoc(
        id=episode_id, show_id=show_id, title=body.title, mode=body.mode, starts_at=body.starts_at,
        timeline=[TimelineItem(at=doc.timeline_at or 0.0, interaction_id=doc.id) for doc in planned],
        created_at=gameplay.clock(),
    )
    await gameplay.store.insert(schema.EPISODES, to_doc(episode))
    if episode.starts_at is not None:
        await publish.notify_scheduler(gameplay.broker, episode.id)  # the scheduler starts it at starts_at
    return episode_view(episode, None, gameplay.clock(), director=True)


async def create_interaction(gameplay: Gameplay, episode_id: str, body: InteractionBody) -> InteractionView:
    episode = await gameplay.episode(episode_id, fresh=True)
    if episode is None:
        raise _not_found("episode")
    doc = new_interaction(gameplay, episode_id, body)
    if episode.status == "ended":
        raise ApiError("invalid_state", "the episode has ended")
    await gameplay.store.insert(schema.INTERACTIONS, to_doc(doc))
    await gameplay.invalidate("interaction", [doc.id])  # a node may have cached "unknown" for this id
    return interaction_view(doc, with_correct=True)


# -- interaction transitions -------------------------------------------------------------------------------
async def _interaction_or_404(gameplay: Gameplay, interaction_id: str) -> InteractionDoc:
    doc = await gameplay.interaction(interaction_id, fresh=True)
    if doc is None:
        raise _not_found("interaction")
    return doc


async def _transition(gameplay: Gameplay, doc: InteractionDoc, from_status: str, changes: dict[str, Any]
                      ) -> InteractionDoc | None:
    """Compare-and-set the status; the new document, or None when someone else changed it first."""
    updated = await gameplay.store.update(schema.INTERACTIONS, doc.id, set=changes, where={"status": from_status})
    return from_doc(updated, InteractionDoc) if updated is not None else None


async def open_interaction(gameplay: Gameplay, interaction_id: str, duration: float | None = None,
                           *, late_by: float = 0.0) -> InteractionView:
    """Open a draft interaction now. ``late_by``: set by the scheduler when a timeline entry fires after its
    timecode, and carried in ``interaction.opened`` so clients and operators can tell."""
    doc = await _interaction_or_404(gameplay, interaction_id)
    if doc.status == "draft":
        episode = await gameplay.episode(doc.episode_id, fresh=True)
        if episode is None or episode.status != "live":
            raise ApiError("invalid_state", "the episode is not live")
        await results.mark_complete(gameplay, doc.id)
        opened = await open_draft(gameplay, doc, duration, late_by=late_by)
        if opened is not None:
            # Its deadline joins the scheduler's agenda.
            await publish.notify_scheduler(gameplay.broker, opened.episode_id, opened.id)
            return interaction_view(opened, with_correct=True)
        doc = await _interaction_or_404(gameplay, interaction_id)
    if doc.status == "open":
        await _announce_opened(gameplay, doc, late_by)
        return interaction_view(doc, with_correct=True)
    raise ApiError("invalid_state", f"the interaction is {doc.status}")


async def open_draft(gameplay: Gameplay, doc: InteractionDoc, duration: float | None = None, *, late_by: float = 0.0,
                     finish: Callable[[InteractionDoc], None] | None = None) -> InteractionDoc | None:
    """The ``draft`` → ``open`` compare-and-set and its effects; the opened document, or None when someone
    else changed the status first (nothing done). The director's click and the scheduler's fire both come
    here; the caller has checked that the episode is live and set the answer-set marker
    (``results.mark_complete``): the sets must be complete from the first answer on, and setting the
    marker while the interaction is still a draft is harmless (a draft counts zero answers anyway).

    The message goes out as soon as the open is stored, before the secondary writes (``finish_opened``):
    it is what the audience waits for (fire jitter is measured on it), and each write is a round trip.
    Only the interaction's cache invalidation precedes it (answers must find it open). ``current`` lags
    the message by a few milliseconds: a viewer reading the episode in that window sees
    the previous interaction and gets the new one from the channel. Should the process die in between,
    ``announced_at`` is missing and whoever repeats the open redoes these writes. ``finish``: hand the
    secondary writes to the caller (the scheduler batches those of fires due close together) instead of
    doing them here.
    """
    now = gameplay.clock()
    length = duration if duration is not None else doc.duration
    opened = await _transition(gameplay, doc, "draft", {
        "status": "open", "opens_at": now, "closes_at": now + length, "duration": length})
    if opened is None:
        return None
    await _announce(gameplay, opened, late_by)
    if finish is None:
        await finish_opened(gameplay, [opened])
    else:
        finish(opened)
    return opened


async def _announce(gameplay: Gameplay, doc: InteractionDoc, late_by: float) -> None:
    """``interaction.opened``, preceded by the interaction's cache invalidation: a core holding the draft
    in its cache would refuse the first answers as "not open" until the invalidation arrived. Sent once
    per interaction, however often it is repeated (an interaction opens once): the broker publishes it
    behind a marker in the same atomic write, so a successor redoing a dead leader's fire, or a retried
    click, cannot announce twice whether or not the first attempt got as far as ``announced_at``."""
    await gameplay.invalidate("interaction", [doc.id])
    await publish.to_episode_once(gameplay.broker, doc.episode_id, InteractionOpened(
        interaction=interaction_view(doc, with_correct=False), late_by=round(late_by, 3)),
        marker=f"opened:{doc.id}", ttl=OPENED_MARKER_TTL)


async def _announce_opened(gameplay: Gameplay, doc: InteractionDoc, late_by: float) -> None:
    """An open repeated on an open interaction (a retried click, a successor finishing a dead leader's
    fire). Without ``announced_at`` the first attempt stopped somewhere after the compare-and-set: redo
    what follows it (the message goes out only if it had not, see ``_announce``)."""
    if doc.announced_at is None:
        await _announce(gameplay, doc, late_by)
        await finish_opened(gameplay, [doc])


async def finish_opened(gameplay: Gameplay, docs: list[InteractionDoc]) -> None:
    """What follows ``interaction.opened`` for interactions just opened and announced (``_announce``
    already invalidated their cache entries): the episode's ``current``, ``announced_at``, the episode's
    invalidation. For several at once, each write is done once per batch where it can be (``current`` once
    per episode: the latest opened; one invalidation message), which is what keeps a busy scheduler's cost
    per fire down."""
    if not docs:
        return
    latest: dict[str, InteractionDoc] = {}
    for doc in docs:
        known = latest.get(doc.episode_id)
        if known is None or (doc.opens_at or 0.0) >= (known.opens_at or 0.0):
            latest[doc.episode_id] = doc
    for doc in latest.values():
        await gameplay.store.update(schema.EPISODES, doc.episode_id, set={"current": doc.id})
    # Recorded once current is set: whoever finds announced_at knows the effects are complete.
    for doc in docs:
        await gameplay.store.update(schema.INTERACTIONS, doc.id, set={"announced_at": gameplay.clock()})
    await gameplay.invalidate("episode", list(latest))


async def close_interaction(gameplay: Gameplay, interaction_id: str, *, at: float | None = None) -> InteractionDoc:
    """Close now (a director) or at ``at`` (the deadline, which is when answers stopped counting)."""
    doc = await _interaction_or_404(gameplay, interaction_id)
    if doc.status == "open":
        now = gameplay.clock()
        closed_at = min(at if at is not None else now, doc.closes_at or now)
        closed = await _transition(gameplay, doc, "open", {
            "status": "closed", "closed_at": closed_at, "closes_at": closed_at})
        if closed is not None:
            await _after_close(gameplay, closed)
            return closed
        doc = await _interaction_or_404(gameplay, interaction_id)
    if doc.status in ("closed", "revealed"):
        if doc.status == "closed":
            await publish.to_episode(gameplay.broker, doc.episode_id,
                                     InteractionClosed(interaction_id=doc.id, closed_at=doc.closed_at))
        return doc
    raise ApiError("invalid_state", "the interaction was never opened")


async def _after_close(gameplay: Gameplay, doc: InteractionDoc) -> None:
    await gameplay.invalidate("interaction", [doc.id])
    await results.expire_sets(gameplay, doc)
    await publish.to_episode(gameplay.broker, doc.episode_id,
                             InteractionClosed(interaction_id=doc.id, closed_at=doc.closed_at))


async def reveal_interaction(gameplay: Gameplay, interaction_id: str, correct: str | None = None) -> InteractionView:
    doc = await _interaction_or_404(gameplay, interaction_id)
    if doc.status == "open" and doc.closes_at is not None and doc.closes_at <= gameplay.clock():
        doc = await close_interaction(gameplay, interaction_id)  # due but the scheduler has not got to it yet
    if doc.status == "closed":
        answer = doc.spec.correct_at_reveal(doc.option_ids(), doc.correct, correct)
        now = gameplay.clock()
        changes: dict[str, Any] = {"status": "revealed", "revealed_at": now, "correct": answer}
        if not doc.scored:
            changes["scored_at"] = now  # nothing to score: the sweeper must not look for its job
        revealed = await _transition(gameplay, doc, "closed", changes)
        if revealed is not None:
            return await _after_reveal(gameplay, revealed)
        doc = await _interaction_or_404(gameplay, interaction_id)
    if doc.status == "revealed":
        return await _after_reveal(gameplay, doc)
    raise ApiError("invalid_state", "close the interaction before revealing it" if doc.status == "open"
                   else "the interaction was never opened")


async def _after_reveal(gameplay: Gameplay, doc: InteractionDoc) -> InteractionView:
    await gameplay.invalidate("interaction", [doc.id])
    view = await results.results(gameplay, doc)
    await publish.to_episode(gameplay.broker, doc.episode_id, revealed_message(doc, view))
    if doc.scored and doc.scored_at is None:
        # One job per scoring part: any worker takes any of them, so several score one reveal together.
        await jobs.enqueue(gameplay.broker, *(jobs.ScoreJob(episode_id=doc.episode_id, part=p)
                                             for p in range(ids.SCORING_PARTS)))
    return interaction_view(doc, with_correct=True)


def revealed_message(doc: InteractionDoc, view: Results) -> InteractionRevealed:
    """``interaction.revealed``; for a scored kind with what a client needs to compute its own points
    (``playtotv.points``), so the reveal costs one broadcast, not a message per viewer."""
    if not doc.scored or doc.correct is None:
        return InteractionRevealed(interaction_id=doc.id, correct=doc.correct, results=view)
    return InteractionRevealed(
        interaction_id=doc.id, correct=doc.correct, results=view, points=doc.points, duration=doc.duration,
        opens_at=doc.opens_at, closed_at=doc.closed_at, revealed_at=doc.revealed_at,
        scoring=ScoringRule(full_points_window=score_formula.RULE.full_points_window,
                            streak_step=score_formula.RULE.streak_step, streak_cap=score_formula.RULE.streak_cap))


async def close_due_interactions(deps: Any, now: float) -> int:
    """Close every open interaction whose ``closes_at`` has passed; the scheduler calls this every tick.

    ``deps`` is a NodeContext or a Gameplay. Safe to run on several nodes at once (each close is a
    compare-and-set; the loser does nothing). Returns how many this call closed."""
    gameplay = Gameplay.of(deps)
    due = [from_doc(d, InteractionDoc) for d in await gameplay.store.find(
        schema.INTERACTIONS, {"status": "open"}, order_by="closes_at", limit=CLOSE_BATCH)]
    closed = 0
    for doc in due:
        if doc.closes_at is None or doc.closes_at > now:
            break  # ordered by deadline: the rest are later
        result = await _transition(gameplay, doc, "open", {"status": "closed", "closed_at": doc.closes_at})
        if result is not None:
            await _after_close(gameplay, result)
            closed += 1
    return closed


# -- episode transitions -----------------------------------------------------------------------------------
async def _episode_or_404(gameplay: Gameplay, episode_id: str) -> EpisodeDoc:
    doc = await gameplay.episode(episode_id, fresh=True)
    if doc is None:
        raise _not_found("episode")
    return doc


async def _episode_transition(gameplay: Gameplay, doc: EpisodeDoc, changes: dict[str, Any]) -> EpisodeDoc | None:
    updated = await gameplay.store.update(schema.EPISODES, doc.id, set=changes, where={"status": doc.status})
    return from_doc(updated, EpisodeDoc) if updated is not None else None


async def episode_view_of(gameplay: Gameplay, doc: EpisodeDoc, *, director: bool) -> EpisodeView:
    current = await gameplay.interaction(doc.current) if doc.current else None
    return episode_view(doc, current, gameplay.clock(), director=director)


async def start_episode(gameplay: Gameplay, episode_id: str, at: float | None = None) -> EpisodeView:
    """``at``: when the broadcast started (prerecorded: the timeline runs from it); default now."""
    doc = await _episode_or_404(gameplay, episode_id)
    if doc.status == "scheduled":
        now = gameplay.clock()
        started_at = at if at is not None else now
        started = await _episode_transition(gameplay, doc, {"status": "live", "started_at": started_at,
                                                            "went_live_at": now})
        if started is None:
            doc = await _episode_or_404(gameplay, episode_id)
        else:
            doc = started
            await gameplay.invalidate("episode", [doc.id])
            await publish.notify_scheduler(gameplay.broker, doc.id)  # its timeline joins the agenda
    if doc.status == "live":
        await publish.to_episode(gameplay.broker, doc.id, EpisodeStarted(episode_id=doc.id, started_at=doc.started_at))
        return await episode_view_of(gameplay, doc, director=True)
    raise ApiError("invalid_state", "the episode has ended")


async def end_episode(gameplay: Gameplay, episode_id: str) -> EpisodeView:
    doc = await _episode_or_404(gameplay, episode_id)
    while doc.status != "ended":
        ended = await _episode_transition(gameplay, doc, {"status": "ended", "ended_at": gameplay.clock()})
        doc = ended if ended is not None else await _episode_or_404(gameplay, episode_id)
    await gameplay.invalidate("episode", [doc.id])
    # Whatever is still open closes with the episode (answers after the end make no sense).
    for interaction in await gameplay.interactions_of(doc.id):
        if interaction.status == "open":
            await close_interaction(gameplay, interaction.id)
    await publish.to_episode(gameplay.broker, doc.id, EpisodeEnded(episode_id=doc.id, ended_at=doc.ended_at))
    await publish.notify_scheduler(gameplay.broker, doc.id)  # what remains of its timeline is cancelled
    await jobs.enqueue(gameplay.broker, jobs.EpisodeEndedJob(episode_id=doc.id))
    return await episode_view_of(gameplay, doc, director=True)


async def director_event(gameplay: Gameplay, episode_id: str, event_type: str, data: dict[str, Any]) -> None:
    doc = await gameplay.episode(episode_id)
    if doc is None:
        raise _not_found("episode")
    await publish.to_episode(gameplay.broker, episode_id, DirectorEventData(event_type=event_type, data=data))
