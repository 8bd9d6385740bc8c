"""The push role: WebSockets at ``/v1/ws`` and long polling at ``/v1/poll``, fed by one fan-out hub.

Modules, one concept each:

    hub           channel → local subscribers; the node's one broker subscription; gap detection
    recovery      sans-io: what a client at (epoch, offset) is owed; the recent-frames ring
    listener      accepting, keepalive and drain of WebSocket clients
    handshake     the upgrade request and its ticket check
    connection    one client after its handshake: frames in, frames out, timeouts, slow-client drop
    outbox        one client's outgoing bytes: synchronous write, bounded remainder, writer task
    wsframe       server frames built once for every socket
    clientframes  decoding client frames and the policy for bad ones
    access        which channels a client may follow: its own, and those of episodes that exist
    answers       answers sent on the socket: the interactions the node knows, validation, the batcher
    users         connections per user: the cap, and the distinct users reported as sessions
    polling       the long-poll HTTP route
    qos           the fan-out delay window reported to the registry

``run`` starts the hub, then both listeners, registers the endpoints (``push_ws``, ``push_poll``) and
only then reports started. On ``ctx.draining`` it stops accepting, tells every client to reconnect, and
returns once clients have closed or the grace period ran out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from playtotv.accept import node_gate
from playtotv.gameplay import schema
from playtotv.gameplay.answers import AnswerBatcher, check_durability
from playtotv.gameplay.cache import follow_invalidations
from playtotv.gameplay.ratelimit import TokenBuckets
from playtotv.gameplay.service import Gameplay
from playtotv.http import create_app, serve_http

from .access import EpisodeDirectory
from .answers import AnswerDesk, InteractionBook
from .connection import ConnectionServices
from .handshake import WS_PATH
from .hub import Hub
from .listener import DRAIN_GRACE_MAX, WebSocketServer, max_open, serve_websockets
from .polling import POLL_PATH, PollStats, add_poll_route
from .users import UserSlots

if TYPE_CHECKING:
    from playtotv.context import NodeContext

__all__ = ["run"]

#: How often load and QoS are copied into the node's heartbeat (which goes out every second).
LOAD_REPORT_INTERVAL = 0.5
#: The fan-out delay percentile the registry carries (docs/api.md: the gatekeeper admits on QoS).
FANOUT_PERCENTILE = 0.99


async def run(ctx: NodeContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    settings = ctx.settings.push
    hub = Hub(ctx.broker, recovery_limit=settings.recovery_limit, linger=settings.channel_linger)

    async def episode_exists(episode_id: str) -> bool:
        return await ctx.store.get(schema.EPISODES, episode_id) is not None

    directory = EpisodeDirectory(episode_exists)
    users = UserSlots(settings.max_connections_per_user)  # WebSockets and long polls of each user
    # Answers on the socket keep core's promises: its durability, its per-user rate, its dedupe key.
    check_durability(ctx)
    batcher = AnswerBatcher(ctx.broker, ctx.store, ctx.settings.answers.durability,
                            replicas=ctx.settings.answers.replicas,
                            replica_timeout=ctx.settings.answers.replica_timeout,
                            store_from=ctx.draining if ctx.settings.embedded else None)
    book = InteractionBook(lambda: hub.channels, Gameplay.of(ctx).interaction)
    hub.observer = book
    desk = AnswerDesk(book, batcher, TokenBuckets(ctx.settings.core.rate_per_second, ctx.settings.core.rate_burst))
    services = ConnectionServices(hub, settings, directory, on_dropped_slow=ctx.metrics.dropped_slow.inc,
                                  answers=desk)
    server = WebSocketServer(
        services, ctx.tickets.verify, handshake_timeout=settings.handshake_timeout,
        max_connections=settings.max_connections, keepalive_interval=settings.keepalive_interval, users=users,
    )
    polls = PollStats()
    runtime = ctx.push = PushRuntime(ctx, hub, server, polls, desk)
    app = create_app(ctx, "push")
    add_poll_route(app, ctx, hub, polls, users, directory)
    drain_grace = min(DRAIN_GRACE_MAX, ctx.settings.node.drain_seconds / 2)

    async with trio.open_nursery() as background:
        await background.start(hub.run)
        await background.start(batcher.run)
        if "core" not in ctx.roles:
            # Interactions read from the store are cached as core caches them; a close announced while
            # no local client follows the episode's channel reaches this node as an invalidation.
            await background.start(follow_invalidations, ctx.broker, Gameplay.of(ctx).caches)
        background.start_soon(runtime.report_forever)
        async with trio.open_nursery() as listeners:
            gate = node_gate(ctx, "push", max_open(settings.max_connections))
            ws_url = await listeners.start(serve_websockets, server, settings.bind, ctx.draining, drain_grace,
                                           gate)
            ctx.endpoints["push_ws"] = ctx.public_url(ws_url, WS_PATH)
            ctx.on_listening("push", ctx.endpoints["push_ws"])
            # Printed as "push-polling listening on ..." (the WebSocket listener is "push").
            poll_url = await listeners.start(serve_http, ctx, app, settings.polling_bind, "push-polling")
            ctx.endpoints["push_poll"] = ctx.public_url(poll_url, POLL_PATH)
            await ctx.announce()
            task_status.started()
            await ctx.draining.wait()
            hub.close_polls()  # waiting polls answer now; the HTTP server stops once they have
        background.cancel_scope.cancel()


@dataclass
class PushRuntime:
    """The push role's live objects (``ctx.push``): for the load report, tests and debugging."""

    ctx: NodeContext
    hub: Hub
    server: WebSocketServer
    polls: PollStats
    answers: AnswerDesk
    _reported_frames: int = 0

    def report(self) -> None:
        """Copy connection counts and the fan-out p99 into the heartbeat (ctx.load / ctx.qos) and the
        metrics."""
        ctx, metrics = self.ctx, self.ctx.metrics
        websockets = len(self.server.connections)
        ctx.load["connections"] = float(websockets + self.polls.active)
        # What the gatekeeper counts against capacity: users, once each, however many connections they hold.
        ctx.load["sessions"] = float(len(self.server.users))
        ctx.load["channels"] = float(len(self.hub.channels))
        p99 = self.hub.fanout_delays.percentile(time.time(), FANOUT_PERCENTILE)
        ctx.qos["fanout_p99_ms"] = round(p99 * 1000, 2) if p99 is not None else 0.0
        metrics.connections.labels("push", "websocket").set(websockets)
        metrics.connections.labels("push", "polling").set(self.polls.active)
        metrics.delivered.labels("push", "websocket").inc(self.hub.frames_delivered - self._reported_frames)
        self._reported_frames = self.hub.frames_delivered

    async def report_forever(self) -> None:
        while True:
            self.report()
            await trio.sleep(LOAD_REPORT_INTERVAL)
