"""The worker role: aggregation, live statistics, scoring, achievements, notifications, persistence.

Consumes two queues: ``answers`` (large batches, the aggregation behind live results) and ``jobs``
(scoring at reveal, achievements, friend notifications, episode end), one job per claim so a long
scoring pass holds up only its own consumer. Registers in the registry (it has no listener of its own;
``node.ops_bind`` gives it /healthz, /readyz and /metrics). On drain it stops claiming, finishes and
acknowledges what it holds, sends a last statistics update, and returns. An embedded worker (memory
broker: the queues end with the process) first empties both queues, so that every answer acknowledged
before the drain began is written to the store (core writes those it acknowledges later itself, see
``AnswerBatcher``).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING

import msgspec
import trio

from playtotv import keys
from playtotv.broker.base import QueueItem
from playtotv.gameplay import reveal_scoring, social
from playtotv.gameplay.aggregation import aggregate
from playtotv.gameplay.cache import follow_invalidations
from playtotv.gameplay.jobs import AnsweredJob, EpisodeEndedJob, ScoreJob, job_decoder
from playtotv.gameplay.service import Gameplay
from playtotv.gameplay.stats import StatsPublisher
from playtotv.logs import event
from playtotv.roles.worker.consumer import Backlog, Consumer

if TYPE_CHECKING:
    from playtotv.context import NodeContext

log = logging.getLogger("playtotv.worker")

#: Concurrent job consumers: a scoring pass can take seconds for a big episode; others keep flowing.
JOB_CONSUMERS = 4
#: How often the answer lag (received → counted) is reported as QoS (``queue_lag_s``).
LAG_REPORT_INTERVAL = 1.0
LAG_WINDOW = 4096
#: Pause after a partial answer batch (see Consumer.linger): well inside the 1 s the issue allows from
#: 202 to visible results, and it turns a trickle of answers into batches of dozens.
ANSWER_LINGER = 0.05
#: During an answer burst (full batches) job consumers wait for it to pass, at most this long per claim:
#: live results come first, achievements and notifications after the burst (a question's burst lasts
#: its duration, 15-30 s). Measured (bench worker): with a 5 s bound the jobs of a premiere (a
#: notification per new viewer) took a third of the worker and aggregation ran at ~9k/s; deferred, ~13k/s
#: on the same loaded machine.
JOB_MAX_DEFERRAL = 30.0
#: Longest a draining worker spends on its last statistics update.
FINAL_STATS_TIMEOUT = 1.0


class Worker:
    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.gameplay = Gameplay.of(ctx)
        self.stats = StatsPublisher(self.gameplay, ctx.settings.worker.stats_interval)
        self._lags: deque[float] = deque(maxlen=LAG_WINDOW)
        self.answers_counted = 0
        self.jobs_done = 0

    async def handle_answers(self, items: list[QueueItem]) -> list[str]:
        outcome = await aggregate(self.gameplay, items, time.time())
        self.stats.touched(outcome.touched)
        self._lags.extend(outcome.lags)
        self.answers_counted += outcome.counted
        metrics = self.ctx.metrics.queue_items
        for name, amount in (("late", outcome.late), ("duplicate", outcome.duplicates),
                             ("poison", len(outcome.poison))):
            if amount:
                metrics.labels(keys.ANSWER_QUEUE, name).inc(amount)
        return outcome.ack

    async def handle_jobs(self, items: list[QueueItem]) -> list[str]:
        done: list[str] = []
        for item in items:
            try:
                job = job_decoder.decode(item.data)
            except (msgspec.ValidationError, msgspec.DecodeError):
                log.warning("undecodable job %s (delivery %d)", item.id, item.deliveries)
                continue
            # Unique per attempt: two jobs of one episode on this node must not share the scoring lease.
            holder = f"{self.ctx.node_id}:{item.id}:{secrets.token_hex(4)}"
            match job:
                case ScoreJob():
                    finished = await reveal_scoring.score_episode(self.gameplay, job.episode_id, holder,
                                                                  job.interaction_ids, job.part)
                case EpisodeEndedJob():
                    finished = await reveal_scoring.finish_episode(self.gameplay, job.episode_id, holder)
                case AnsweredJob():
                    await social.process_answered(self.gameplay, job)
                    finished = True
            if finished:
                done.append(item.id)
                self.jobs_done += 1
        return done

    async def report_lag(self) -> None:
        while True:
            await trio.sleep(LAG_REPORT_INTERVAL)
            lags = sorted(self._lags)
            self._lags.clear()
            self.ctx.qos["queue_lag_s"] = round(lags[int(0.95 * (len(lags) - 1))], 3) if lags else 0.0


async def finish_in_process_queues(answers: Consumer, jobs: Consumer) -> None:
    """The embedded queues live in this process's memory: whatever is left in them when it exits is lost,
    acknowledged answers included. Empty both, answers first (aggregating them queues jobs), until both
    stay empty. Bounded by the node's drain deadline, like every other part of the drain."""
    while await answers.finish() + await jobs.finish():
        pass
    event(log, "queues emptied before exit", answers=answers.processed, jobs=jobs.processed)


async def run(ctx: NodeContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    worker = Worker(ctx)
    ctx.worker = worker
    settings = ctx.settings.worker
    await worker.gameplay.ensure_schema()
    async with trio.open_nursery() as background:
        await background.start(follow_invalidations, ctx.broker, worker.gameplay.caches)
        background.start_soon(worker.stats.run)
        background.start_soon(worker.report_lag)
        answers_backlog = Backlog(JOB_MAX_DEFERRAL)
        answer_consumers = [Consumer(ctx, keys.ANSWER_QUEUE, worker.handle_answers, settings.batch_size,
                                     linger=ANSWER_LINGER, signal=answers_backlog)
                            for _ in range(settings.concurrency)]
        job_consumers = [Consumer(ctx, keys.JOB_QUEUE, worker.handle_jobs, 1, gate=answers_backlog)
                         for _ in range(JOB_CONSUMERS)]
        async with trio.open_nursery() as consumers:
            for consumer in answer_consumers + job_consumers:
                consumers.start_soon(consumer.run)
            await ctx.announce()
            task_status.started()
        # Draining: consumers finished their batches and stopped claiming.
        if ctx.settings.embedded:
            await finish_in_process_queues(answer_consumers[0], job_consumers[0])
        with trio.move_on_after(FINAL_STATS_TIMEOUT):
            await worker.stats.flush()
        background.cancel_scope.cancel()
