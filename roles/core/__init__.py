"""The core role: the public REST API for viewers and directors (docs/api.md §4).

Stateless apart from instance-local caches (valid because clients are sticky; correct without it, see
``playtotv.gameplay.cache``) and the answer batcher. On drain, Hypercorn stops accepting, finishes the
requests in flight (the batcher keeps running for them), and only then does the rest stop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from playtotv.gameplay.answers import AnswerBatcher, check_durability
from playtotv.gameplay.cache import follow_invalidations
from playtotv.gameplay.ratelimit import TokenBuckets
from playtotv.gameplay.service import Gameplay
from playtotv.http import create_app, serve_http
from playtotv.roles.core import director_api, viewer_api, web
from playtotv.roles.core.callers import Authenticator, FailedCredentials
from playtotv.roles.core.names import TicketNames
from playtotv.roles.core.request_latency import LatencyWindow

if TYPE_CHECKING:
    from playtotv.context import NodeContext

__all__ = ["CoreApi", "check_durability", "run"]


class CoreApi:
    """Everything one core listener needs, wired once."""

    def __init__(self, ctx: NodeContext) -> None:
        settings = ctx.settings
        self.ctx = ctx
        self.gameplay = Gameplay.of(ctx)
        self.max_body = settings.core.max_body_bytes
        #: Episodes with a timeline of up to 500 interactions are far larger than an answer; only the
        #: director's creation endpoints accept bodies up to this size (still checked before decoding).
        self.max_director_body = settings.core.max_director_body_bytes
        self.auth = Authenticator(ctx.tickets, ctx.director_keys,
                                  TokenBuckets(settings.core.rate_per_second, settings.core.rate_burst),
                                  FailedCredentials(settings.core.failed_auth_per_second,
                                                    settings.core.failed_auth_burst))
        check_durability(ctx)
        # Embedded, the queue ends with the process: answers acknowledged while draining go to the store too.
        self.batcher = AnswerBatcher(ctx.broker, ctx.store, settings.answers.durability,
                                     replicas=settings.answers.replicas,
                                     replica_timeout=settings.answers.replica_timeout,
                                     store_from=ctx.draining if settings.embedded else None)
        self.latency = LatencyWindow()
        self.ticket_names = TicketNames(self.gameplay, self.auth.tickets)
        self.app = create_app(ctx, "core", max_body=max(self.max_body, self.max_director_body))
        self.app.before_request(self.ticket_names.before_request)
        self.app.after_request(self.latency.after_request)
        director_api.register(self)
        viewer_api.register(self)
        web.register(self)  # /console, /play and their files


async def run(ctx: NodeContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    api = CoreApi(ctx)
    ctx.core = api  # tests and in-process tools reach the batcher and caches through it
    await api.gameplay.ensure_schema()
    async with trio.open_nursery() as background:
        await background.start(follow_invalidations, ctx.broker, api.gameplay.caches)
        await background.start(api.batcher.run)
        background.start_soon(api.latency.report_forever, ctx.qos)
        async with trio.open_nursery() as server:
            url = await server.start(serve_http, ctx, api.app, ctx.settings.core.bind, "core")
            ctx.endpoints["core"] = ctx.public_url(url)
            await ctx.announce()
            task_status.started()
        # The listener has drained (in-flight requests answered): nothing else needs to run.
        background.cancel_scope.cancel()
