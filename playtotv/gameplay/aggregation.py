"""The worker's answer aggregation: one batch of queued answers → store, per-choice sets, follow-ups.

At-least-once delivery makes every step idempotent, so a batch redelivered after its worker was killed
(docs/reliability.md #12) leaves the totals exact:

1. answers are inserted by natural id (``{interaction}:{user}``), insert-if-absent: a redelivered answer
   finds its own document and is counted again harmlessly; a *different* answer by the same user (only
   possible if Redis lost the dedupe key) finds the first one and is dropped — first answer wins;
2. counting adds the user to the choice's sorted set (``results``): adding twice changes nothing;
3. follow-up jobs (achievements, friends, late scoring) are idempotent themselves.

The interaction is read *after* the answers are persisted: if it was revealed meanwhile, the reveal's
scoring pass may have missed them, so another pass is enqueued (the pass skips what it already scored).

An answer received after the interaction's close (possible only when a director closed early and a core
had not heard yet) is acknowledged but not counted.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import msgspec

from playtotv import keys
from playtotv.broker.base import QueueItem
from playtotv.gameplay import jobs, schema
from playtotv.gameplay.answers import AnswerItem, item_decoder
from playtotv.gameplay.documents import AnswerDoc, InteractionDoc, from_doc, to_doc
from playtotv.gameplay.results import choice_key
from playtotv.gameplay.service import Gameplay

log = logging.getLogger("playtotv.gameplay.aggregation")


@dataclass
class BatchOutcome:
    #: Queue ids to acknowledge (counted, late, duplicate).
    ack: list[str] = field(default_factory=list)
    #: Queue ids left unacknowledged: they will be redelivered, then dead-lettered by the broker.
    poison: list[str] = field(default_factory=list)
    counted: int = 0
    late: int = 0
    duplicates: int = 0
    #: Interactions whose counts changed (for stats.updated).
    touched: dict[str, InteractionDoc] = field(default_factory=dict)
    #: Seconds from received_at to counted, per counted answer (the worker's lag).
    lags: list[float] = field(default_factory=list)


def decode(items: list[QueueItem], outcome: BatchOutcome) -> list[tuple[QueueItem, AnswerItem]]:
    decoded = []
    for item in items:
        try:
            decoded.append((item, item_decoder.decode(item.data)))
        except (msgspec.ValidationError, msgspec.DecodeError):
            log.warning("undecodable answer item %s (delivery %d)", item.id, item.deliveries)
            outcome.poison.append(item.id)
    return decoded


async def aggregate(gameplay: Gameplay, items: list[QueueItem], now: float) -> BatchOutcome:
    outcome = BatchOutcome()
    answers = decode(items, outcome)
    if not answers:
        return outcome

    # 1. persist (insert-if-absent by natural id), learning which stored answers disagree with ours.
    documents = [answer.document() for _, answer in answers]
    first: dict[str, AnswerDoc] = {}
    for doc in documents:
        first.setdefault(doc.id, doc)  # within the batch too, the first answer wins
    existing = {d["_id"]: from_doc(d, AnswerDoc) for d in await gameplay.store.get_many(schema.ANSWERS, list(first))}
    new = [to_doc(doc) for doc_id, doc in first.items() if doc_id not in existing]
    if new:
        await gameplay.store.bulk_insert(schema.ANSWERS, new)

    # 2. the interactions as they are now (after the write: see the module docstring).
    iids = sorted({a.interaction_id for _, a in answers})
    found = await gameplay.store.get_many(schema.INTERACTIONS, iids)
    interactions = {d["_id"]: from_doc(d, InteractionDoc) for d in found}

    members: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    viewers: dict[str, dict[str, float]] = defaultdict(dict)
    answered: dict[tuple[str, str], list[tuple[str, float]]] = defaultdict(list)
    rescore: dict[str, set[str]] = defaultdict(set)
    for (item, answer), doc in zip(answers, documents, strict=True):
        interaction = interactions.get(answer.interaction_id)
        if interaction is None:
            log.warning("answer %s for unknown interaction %s", item.id, answer.interaction_id)
            outcome.poison.append(item.id)
            continue
        outcome.ack.append(item.id)
        stored = existing.get(doc.id) or first[doc.id]
        if (stored.choice, stored.received_at) != (doc.choice, doc.received_at):
            outcome.duplicates += 1
            continue
        if interaction.closed_at is not None and answer.received_at >= interaction.closed_at:
            outcome.late += 1
            continue
        members[(answer.interaction_id, choice_key(answer.choice))][answer.user_id] = answer.received_at
        viewers[answer.episode_id][answer.user_id] = answer.received_at
        answered[(answer.episode_id, answer.interaction_id)].append((answer.user_id, answer.received_at))
        outcome.touched[interaction.id] = interaction
        outcome.lags.append(now - answer.received_at)
        outcome.counted += 1
        if interaction.status == "revealed" and interaction.scored:
            rescore[interaction.episode_id].add(interaction.id)

    # 3. count: set unions, idempotent; one round trip for the whole batch.
    sets = {keys.answer_set(interaction_id, choice): users for (interaction_id, choice), users in members.items()}
    sets.update((keys.episode_viewers(episode_id), users) for episode_id, users in viewers.items())
    await gameplay.broker.zadd_many(sets)

    # 4. follow-ups, off this path.
    follow_ups: list[jobs.Job] = [
        jobs.AnsweredJob(episode_id=e, interaction_id=i, answers=users) for (e, i), users in answered.items()]
    follow_ups += [jobs.ScoreJob(episode_id=e, interaction_ids=sorted(i)) for e, i in rescore.items()]
    if follow_ups:
        await jobs.enqueue(gameplay.broker, *follow_ups)
    return outcome
