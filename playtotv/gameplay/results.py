"""Per-choice answer counts and the results view.

Counts live in Redis as one sorted set per (interaction, choice) whose members are user ids (see
``keys.answer_set``): adding an answer is idempotent, so a redelivered queue item changes nothing and the
count is exactly ``zcard``. A marker key says the sets are complete; when it is missing (Redis lost its
memory, or the sets expired) the first reader rebuilds them from the store's answers, the source of truth.
"""

from __future__ import annotations

from collections import defaultdict

from playtotv import keys
from playtotv.gameplay import schema
from playtotv.gameplay.documents import AnswerDoc, InteractionDoc, from_docs
from playtotv.gameplay.service import Gameplay
from playtotv.protocol.rest import Results

#: How long answer sets and their marker outlive the interaction's close. Results of older interactions
#: are rebuilt from the store on demand.
ANSWER_SETS_TTL = 3 * 24 * 3600.0
#: Rebuilds add members in chunks, keeping each broker call small.
REBUILD_CHUNK = 1000
PERCENT_DECIMALS = 1
AVERAGE_DECIMALS = 2


def choice_key(choice: str | int) -> str:
    return str(choice)


async def mark_complete(gameplay: Gameplay, interaction_id: str) -> None:
    """Called when an interaction opens: from now on every answer is added to the sets."""
    await gameplay.broker.set(keys.answer_sets_marker(interaction_id), b"1", ttl=ANSWER_SETS_TTL)


async def expire_sets(gameplay: Gameplay, doc: InteractionDoc) -> None:
    """Called when an interaction closes: the sets need not outlive it by much."""
    for choice in doc.choices():
        await gameplay.broker.expire(keys.answer_set(doc.id, choice), ANSWER_SETS_TTL)


async def rebuild(gameplay: Gameplay, doc: InteractionDoc) -> None:
    """Refill the sets from the store. Safe to run concurrently with the worker adding answers, and with
    another rebuild: every operation is a set union."""
    answers = from_docs(await gameplay.store.find(schema.ANSWERS, {"interaction_id": doc.id}), AnswerDoc)
    closed_at = doc.closed_at
    by_choice: dict[str, dict[str, float]] = defaultdict(dict)
    for answer in answers:
        if closed_at is not None and answer.received_at >= closed_at:
            continue
        by_choice[choice_key(answer.choice)][answer.user_id] = answer.received_at
    for choice, members in by_choice.items():
        items = list(members.items())
        for start in range(0, len(items), REBUILD_CHUNK):
            await gameplay.broker.zadd(keys.answer_set(doc.id, choice), dict(items[start:start + REBUILD_CHUNK]))
        await gameplay.broker.expire(keys.answer_set(doc.id, choice), ANSWER_SETS_TTL)
    await mark_complete(gameplay, doc.id)


async def counts(gameplay: Gameplay, doc: InteractionDoc) -> dict[str, int]:
    """Answers per choice (every choice present, zero included)."""
    choices = doc.choices()
    if doc.status == "draft":
        return {c: 0 for c in choices}
    if not await gameplay.broker.exists(keys.answer_sets_marker(doc.id)):
        await rebuild(gameplay, doc)
    return {c: await gameplay.broker.zcard(keys.answer_set(doc.id, c)) for c in choices}


def build(doc: InteractionDoc, per_choice: dict[str, int]) -> Results:
    total = sum(per_choice.values())
    percent = {c: (round(100.0 * n / total, PERCENT_DECIMALS) if total else 0.0) for c, n in per_choice.items()}
    average = None
    if doc.spec.average:
        average = round(sum(int(c) * n for c, n in per_choice.items()) / total, AVERAGE_DECIMALS) if total else None
    correct = doc.correct if doc.status == "revealed" else None
    return Results(total=total, counts=per_choice, percent=percent, correct=correct, average=average)


async def results(gameplay: Gameplay, doc: InteractionDoc) -> Results:
    """The results view; cached per process for ``cache.RESULTS_TTL`` (a crowd polling results costs one
    set of reads per interval per core)."""

    async def load() -> Results:
        return build(doc, await counts(gameplay, doc))

    return await gameplay.caches.results.get_or_load(doc.id, load)
