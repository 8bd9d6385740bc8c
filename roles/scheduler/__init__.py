"""The scheduler role: fires prerecorded timelines on time and exactly once, closes interactions at their
deadline, starts episodes at ``starts_at``, and does housekeeping.

Any number of instances may run; one leads through a broker lease with a fencing token and the others
stand by, taking over within the lease TTL when the leader dies (docs/reliability.md #14, #15). The leader
keeps an agenda sorted by due time and sleeps until the next job; it hears about new work through a
notice channel (episode started or ended, interaction opened), with a slow full reload from the store as
a safety net, never a store poll every tick.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec
import trio

from playtotv import keys
from playtotv.broker.base import BrokerUnavailable, SubscriptionReset
from playtotv.gameplay.director import close_due_interactions, finish_opened
from playtotv.gameplay.documents import InteractionDoc
from playtotv.gameplay.service import Gameplay
from playtotv.logs import event
from playtotv.protocol.errors import ApiError
from playtotv.roles.scheduler import timeline
from playtotv.roles.scheduler.agenda import Agenda, Job
from playtotv.roles.scheduler.housekeeping import housekeeping
from playtotv.roles.scheduler.leadership import LEASE_NAME, Leadership
from playtotv.roles.scheduler.probe import monitor
from playtotv.store.base import StoreUnavailable

if TYPE_CHECKING:
    from playtotv.context import NodeContext

log = logging.getLogger("playtotv.scheduler")

#: Full reload of the agenda from the store: a safety net for a lost notice, not the main path. It runs
#: in a task of its own and merges into the agenda, so a large reload never delays a due entry.
RELOAD_INTERVAL = 30.0
#: After a failed job (store or broker down), retry it this much later rather than spinning.
RETRY_DELAY = 0.5
#: Jobs in flight at once: a fire is a dozen store and broker round trips, so entries due close together
#: must not queue behind each other (that queueing is fire jitter), but a burst must not flood the store.
#: A fire holds a slot while it prepares and while it fires, not while it waits for its timecode.
MAX_CONCURRENT_JOBS = 32
#: A fire job comes out of the agenda this long before its timecode: the interaction is read and its
#: answer-set marker set ahead, so at the timecode only the fencing check, the fire record, the open and
#: the message remain. Long enough to cover a prepare on a loaded machine, short enough that what was
#: read is still current (the open is a compare-and-set anyway: a stale read costs the slow path only).
FIRE_LEAD = 1.0
#: The writes that follow ``interaction.opened`` wait this long for the next fires' to share the
#: episode's invalidation message and ``current``: at 50 entries a second, ~4 calls per fire become ~2, on a
#: machine where each call costs a millisecond of CPU. Short against a viewer's reaction to the message;
#: the interaction's own cache invalidation is not deferred (``director.open_draft`` sends it first).
FINISH_BATCH_WINDOW = 0.05


class _Notice(msgspec.Struct):
    episode_id: str
    interaction_id: str | None = None  # set when one interaction opened: only its deadline is new


_notice_decoder = msgspec.json.Decoder(_Notice)


class Scheduler:
    def __init__(self, ctx: NodeContext, leadership: Leadership) -> None:
        self.ctx = ctx
        self.gameplay = Gameplay.of(ctx)
        self.leadership = leadership
        self.agenda = Agenda(fire_lead=FIRE_LEAD)
        self.wake = trio.Event()
        self.fired: list[tuple[str, str, float]] = []  # (interaction, outcome, late_by): for metrics/tests
        self.limiter = trio.CapacityLimiter(MAX_CONCURRENT_JOBS)
        self.opened: list[InteractionDoc] = []  # fired and announced, their secondary writes not done yet
        self.opened_ready = trio.Event()

    def _wake(self) -> None:
        self.wake.set()

    async def lead_while_leader(self) -> None:
        """Run the agenda for as long as we hold the lease; return when we lose it."""
        token = self.leadership.token
        assert token is not None
        async with trio.open_nursery() as nursery:
            async def watch_leadership() -> None:
                while self.leadership.token == token:
                    await self.leadership.changed.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_leadership)
            nursery.start_soon(self._listen_for_notices)
            nursery.start_soon(self._finish_opened)
            await self._run_agenda(token, nursery)

    async def _fence(self, token: int) -> bool:
        try:
            return await self.ctx.broker.lease_token(LEASE_NAME) == token and self.leadership.token == token
        except BrokerUnavailable:
            return False

    def _queue_opened(self, doc: InteractionDoc) -> None:
        self.opened.append(doc)
        self.opened_ready.set()

    async def _finish_opened(self) -> None:
        """The writes that follow each ``interaction.opened`` (``director.finish_opened``), done by this one
        task for every fire announced meanwhile: fires due close together share the episode's invalidation
        message and ``current`` (FINISH_BATCH_WINDOW), so the cost per fire falls as the rate rises
        instead of queueing on the leader's CPU. Leadership lost with some pending: they lack
        ``announced_at``, and the successor redoes these writes (their message already went out, and
        ``publish_once`` keeps it from going out again)."""
        while True:
            await self.opened_ready.wait()
            await trio.sleep(FINISH_BATCH_WINDOW)
            self.opened_ready = trio.Event()
            batch, self.opened = self.opened, []
            try:
                await finish_opened(self.gameplay, batch)
            except (StoreUnavailable, BrokerUnavailable) as e:
                event(log, "writes after interaction.opened failed; retrying", count=len(batch),
                      error=type(e).__name__)
                self.opened = batch + self.opened
                await trio.sleep(RETRY_DELAY)
                self.opened_ready.set()

    async def _reload(self) -> None:
        """Merge everything the store says is due into the agenda. Jobs already done that linger are
        harmless: every job is idempotent."""
        for job in await timeline.all_jobs(self.gameplay):
            self.agenda.add(job)
        self._wake()

    async def _reload_forever(self) -> None:
        while True:
            try:
                await self._reload()
                await trio.sleep(RELOAD_INTERVAL)
            except (StoreUnavailable, BrokerUnavailable):
                await trio.sleep(RETRY_DELAY)

    async def _listen_for_notices(self) -> None:
        while True:
            try:
                async with self.ctx.broker.subscribe([keys.SCHEDULER_NOTICES]) as sub:
                    async for item in sub:
                        if isinstance(item, SubscriptionReset):
                            self._wake()  # notices may be lost: the agenda loop reloads on wake-ups too
                            continue
                        try:
                            notice = _notice_decoder.decode(item.data)
                        except msgspec.ValidationError:
                            continue
                        if notice.interaction_id is not None:
                            for job in await timeline.deadline_of(self.gameplay, notice.interaction_id):
                                self.agenda.add(job)
                            self._wake()
                            continue
                        episode, jobs = await timeline.jobs_for_notice(self.gameplay, notice.episode_id)
                        if episode is not None and episode.status == "ended":
                            self.agenda.discard_episode(episode.id)
                        for job in jobs:
                            self.agenda.add(job)
                        self._wake()
            except (BrokerUnavailable, StoreUnavailable):
                await trio.sleep(RETRY_DELAY)

    async def _run_agenda(self, token: int, jobs: trio.Nursery) -> None:
        self.agenda.clear()  # a new term: what the previous one knew may be stale; the reload refills it
        jobs.start_soon(self._reload_forever)
        while True:
            due = self.agenda.next_due()
            with trio.move_on_after(RELOAD_INTERVAL if due is None else max(0.0, due - self.gameplay.clock())):
                await self.wake.wait()
            self.wake = trio.Event()
            for job in self.agenda.pop_due(self.gameplay.clock()):
                jobs.start_soon(self._do, job, token)  # each takes a limiter slot while it works

    async def _do(self, job: Job, token: int) -> None:
        try:
            if job.kind == "fire":
                await self._fire(job, token)
            else:
                async with self.limiter:
                    await self._do_now(job)
        except (StoreUnavailable, BrokerUnavailable, ApiError) as e:
            event(log, "scheduler job failed; retrying", job=job.key, error=type(e).__name__)
            self.agenda.add(job)
            await trio.sleep(RETRY_DELAY)

    async def _fire(self, job: Job, token: int) -> None:
        async with self.limiter:
            prepared = await timeline.prepare_fire(self.gameplay, job)
        await trio.sleep(max(0.0, job.due - self.gameplay.clock()))  # never early: jitter counts from the timecode
        async with self.limiter:
            now = self.gameplay.clock()
            outcome, follow_ups = await timeline.fire_entry(
                self.gameplay, job, now=now, grace=self.ctx.settings.scheduler.late_grace, token=token,
                fence=lambda: self._fence(token), prepared=prepared, finish=self._queue_opened)
        for follow_up in follow_ups:
            self.agenda.add(follow_up)
            self._wake()
        self.fired.append((job.interaction_id or "", outcome, max(0.0, now - job.due)))
        if outcome == "fired" and now - job.due > 0.5:
            event(log, "timeline entry fired late", interaction=job.interaction_id, late_by=round(now - job.due, 3))

    async def _do_now(self, job: Job) -> None:
        if job.kind == "close":
            await close_due_interactions(self.gameplay, self.gameplay.clock())
        elif job.kind == "start":
            await timeline.start_episode(self.gameplay, job)
            _, jobs = await timeline.jobs_for_notice(self.gameplay, job.episode_id)
            for follow_up in jobs:
                self.agenda.add(follow_up)

    async def run(self) -> None:
        while not self.ctx.draining.is_set():
            if self.leadership.token is None:
                with trio.move_on_after(1.0):
                    await self.leadership.changed.wait()
                continue
            await self.lead_while_leader()


async def run(ctx: NodeContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    leadership = Leadership(ctx)
    scheduler = Scheduler(ctx, leadership)
    ctx.scheduler = scheduler
    ctx.load["leader"] = 0.0
    await Gameplay.of(ctx).ensure_schema()
    await ctx.announce()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(leadership.run)
        nursery.start_soon(scheduler.run)
        nursery.start_soon(housekeeping, ctx, leadership)
        nursery.start_soon(monitor, ctx, leadership)
        task_status.started()
        await ctx.draining.wait()
        nursery.cancel_scope.cancel()

