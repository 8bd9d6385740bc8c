"""The answer path (docs/architecture.md §5): validate in the request, then dedupe and enqueue in one broker round
trip per batch of concurrent answers, and answer 202.

``AnswerBatcher`` coalesces the answers of concurrent requests: each request adds its entry and waits;
a flusher takes everything waiting (up to ``MAX_BATCH``) and sends it as one ``enqueue_unique`` call (one
Lua script in Redis), with up to ``MAX_IN_FLIGHT`` batches outstanding so a burst never waits behind one
round trip. Under light load a batch is a single answer and costs nothing extra; under a burst the cost
per answer falls with the batch size.

Durability (``answers.durability``) — what a 202 promises:

``queued`` (default)
    The answer is in the broker's queue. Cheapest; an answer is lost only if Redis loses acknowledged
    writes (a crash before persistence, a failover to a replica that had not received it).
``replicated``
    As ``queued``, and Redis confirmed (WAIT) that ``answers.replicas`` replicas hold it within
    ``answers.replica_timeout``, else 503. Survives a failover to any of those replicas; costs a
    replication round trip per batch (batches amortise it). Needs Redis with replicas.
``stored``
    As ``queued``, and the answer is written to the store (insert-if-absent by natural id) before the
    202. Survives losing Redis entirely; costs a store write per batch and ties answer latency to the
    store's.

In every mode the dedupe key is set in the same atomic step as the enqueue, so a retried request finds
it: 409 ``already_answered``, never a second answer.

Draining an embedded node: its queue is in the process's memory and ends with it. The worker empties it
once the drain begins, but requests in flight keep being answered after that; so from then on
(``store_from`` set) every batch is also written to the store before its 202, as with ``stored``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import msgspec
import trio

from playtotv import keys
from playtotv.broker.base import Broker, BrokerUnavailable, ReplicatedQueues
from playtotv.gameplay import ids, schema
from playtotv.gameplay.documents import AnswerDoc, InteractionDoc, to_doc
from playtotv.protocol.errors import ApiError
from playtotv.settings import ConfigError
from playtotv.store.base import Store, StoreUnavailable

if TYPE_CHECKING:
    from playtotv.context import NodeContext

log = logging.getLogger("playtotv.gameplay.answers")

Durability = Literal["queued", "replicated", "stored"]

#: Answers per enqueue_unique call: large enough to amortise a round trip under a burst, small enough
#: that one Lua script never blocks Redis for long (~1 ms at this size).
MAX_BATCH = 256
#: Batches outstanding at once. While they are out, new answers gather into the next batch: fewer,
#: larger broker calls (the Redis client's per-call cost dominates small batches) for at most one extra
#: round trip of waiting; two keep the connection busy while one batch is being answered.
MAX_IN_FLIGHT = 2
#: A dedupe key outlives the interaction's deadline by this much, covering clock skew between cores and
#: a retry arriving just after the close (which is refused as closed anyway).
DEDUPE_MARGIN = 120.0
#: How long a client is told to wait when the broker or the store is down.
UNAVAILABLE_RETRY_AFTER = 2.0


class AnswerItem(msgspec.Struct, array_like=True, frozen=True):
    """One accepted answer as queued (msgpack array: small and fast to decode in bulk)."""

    interaction_id: str
    episode_id: str
    user_id: str
    choice: str | int
    received_at: float

    def document(self) -> AnswerDoc:
        return AnswerDoc(id=ids.answer_id(self.interaction_id, self.user_id), interaction_id=self.interaction_id,
                         episode_id=self.episode_id, user_id=self.user_id, choice=self.choice,
                         received_at=self.received_at, part=ids.scoring_part(self.user_id))


encode_item = msgspec.msgpack.Encoder().encode
item_decoder = msgspec.msgpack.Decoder(AnswerItem)


def check_durability(ctx: NodeContext) -> None:
    """``replicated`` needs Redis replicas and a broker that can wait for them (every role that runs a
    batcher checks it at start: core, push)."""
    if ctx.settings.answers.durability != "replicated":
        return
    if ctx.settings.embedded:
        raise ConfigError("answers.durability: 'replicated' needs redis.url (the embedded broker has no replicas)")
    if not isinstance(ctx.broker, ReplicatedQueues):
        raise ConfigError("answers.durability: 'replicated' is not supported by this broker")


def validate(doc: InteractionDoc | None, choice: str | int, now: float) -> InteractionDoc:
    """The request-time checks, in docs/api.md's order of precedence: unknown, not open, bad choice."""
    if doc is None:
        raise ApiError("not_found", "unknown interaction")
    if not doc.accepts_answers(now):
        raise ApiError("interaction_closed", "the interaction is not open")
    doc.spec.check_choice(doc.option_ids(), doc.scale, choice)
    return doc


def dedupe_ttl(doc: InteractionDoc, now: float) -> float:
    return max(1.0, (doc.closes_at or now) - now) + DEDUPE_MARGIN


class _Waiter:
    __slots__ = ("item", "key", "payload", "ttl", "done", "accepted", "error")

    def __init__(self, item: AnswerItem, ttl: float) -> None:
        self.item = item
        self.key = keys.answer_dedupe(item.interaction_id, item.user_id)
        self.payload = encode_item(item)
        self.ttl = ttl
        self.done = trio.Event()
        self.accepted: bool | None = None
        self.error: BaseException | None = None


class AnswerBatcher:
    def __init__(self, broker: Broker, store: Store, durability: Durability = "queued", *, replicas: int = 1,
                 replica_timeout: float = 1.0, max_batch: int = MAX_BATCH, max_in_flight: int = MAX_IN_FLIGHT,
                 store_from: trio.Event | None = None):
        self.broker = broker
        self.store = store
        self.durability = durability
        #: Once set, batches are written to the store as with ``stored`` (see the module docstring).
        self.store_from = store_from
        self.replicas = replicas
        self.replica_timeout = replica_timeout
        self.max_batch = max_batch
        self._slots = trio.Semaphore(max_in_flight)
        self._pending: list[_Waiter] = []
        self._arrivals = trio.lowlevel.ParkingLot()
        self._running = False
        self.batches = 0
        self.answers = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._running = True
            task_status.started()
            try:
                while True:
                    while not self._pending:
                        await self._arrivals.park()
                    await self._slots.acquire()
                    batch = self._pending[: self.max_batch]
                    del self._pending[: self.max_batch]
                    nursery.start_soon(self._flush, batch)
            finally:
                self._running = False

    async def submit(self, item: AnswerItem, ttl: float) -> bool:
        """True when enqueued, False when this user had already answered this interaction.

        Raises ApiError ``unavailable`` when the broker (or, for ``stored``, the store) is down. A caller
        cancelled while waiting leaves its answer in the batch: it is enqueued, and a retry gets 409."""
        if not self._running:
            raise ApiError("unavailable", "answers are not being accepted", retry_after=UNAVAILABLE_RETRY_AFTER)
        waiter = _Waiter(item, ttl)
        self._pending.append(waiter)
        self._arrivals.unpark()
        await waiter.done.wait()
        if isinstance(waiter.error, (BrokerUnavailable, StoreUnavailable)):
            raise ApiError("unavailable", f"answer not recorded: {waiter.error}",
                           retry_after=UNAVAILABLE_RETRY_AFTER) from waiter.error
        if waiter.error is not None:
            raise RuntimeError("answer batch failed") from waiter.error
        assert waiter.accepted is not None
        return waiter.accepted

    async def _flush(self, batch: list[_Waiter]) -> None:
        try:
            accepted = await self._enqueue(batch)
            # Looked at after the enqueue: a batch enqueued before the drain began is in the queue the
            # draining worker empties; one enqueued after it may be too late for the worker.
            if self.durability == "stored" or (self.store_from is not None and self.store_from.is_set()):
                docs = [to_doc(w.item.document()) for w, ok in zip(batch, accepted, strict=True) if ok]
                await self.store.bulk_insert(schema.ANSWERS, docs)
            for waiter, ok in zip(batch, accepted, strict=True):
                waiter.accepted = ok
            self.batches += 1
            self.answers += len(batch)
        except (BrokerUnavailable, StoreUnavailable) as exc:
            for waiter in batch:
                waiter.error = exc
        except Exception as exc:
            # A bug must fail these requests (500, logged once here), not the batcher every request needs.
            log.exception("answer batch failed")
            for waiter in batch:
                waiter.error = exc
        finally:
            for waiter in batch:
                if waiter.accepted is None and waiter.error is None:
                    waiter.error = BrokerUnavailable("answer batch interrupted")  # cancelled (shutdown)
                waiter.done.set()
            self._slots.release()

    async def _enqueue(self, batch: list[_Waiter]) -> list[bool]:
        entries = [(w.key, w.payload) for w in batch]
        ttl = max(w.ttl for w in batch)
        if self.durability == "replicated":
            # core and push refuse to start with a broker lacking the capability (check_durability)
            assert isinstance(self.broker, ReplicatedQueues)
            return await self.broker.enqueue_unique_replicated(
                keys.ANSWER_QUEUE, entries, ttl, self.replicas, self.replica_timeout)
        return await self.broker.enqueue_unique(keys.ANSWER_QUEUE, entries, ttl)
