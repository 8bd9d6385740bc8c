"""The gatekeeper role: admission by licensed and measured capacity, and live endpoint lists.

Every decision is taken from a registry snapshot cached in memory and refreshed about once a second
(docs/architecture.md §5), never a database call per request. A rejection does less work than an admission: no
ticket is signed and no endpoint list is built, and it is answered beneath the web framework
(``fastpath.py``), so it costs less than any endpoint on the same stack.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
import trio
from quart import Response, request

from playtotv.broker.base import BrokerUnavailable
from playtotv.credentials import QUEUE_ROLE, ExpiredTicket, InvalidTicket
from playtotv.http import create_app, json_response, serve_http
from playtotv.logs import event
from playtotv.protocol.errors import ApiError
from playtotv.protocol.rest import (
    GatekeeperStatus,
    NodeCounts,
    PushEndpoints,
    SessionRequest,
    SessionResponse,
    session_request_decoder,
)
from playtotv.registry.base import NodeInfo
from playtotv.roles.gatekeeper.admissions import Admissions
from playtotv.roles.gatekeeper.capacity import CapacityController, Slo
from playtotv.roles.gatekeeper.fastpath import FastRefusals
from playtotv.roles.gatekeeper.outcome import Place, Refusal
from playtotv.roles.gatekeeper.placement import order_core, order_push
from playtotv.roles.gatekeeper.waiting_room import WaitingRoom

if TYPE_CHECKING:
    from playtotv.context import NodeContext

log = logging.getLogger("playtotv.gatekeeper")

SNAPSHOT_INTERVAL = 1.0
#: Rejected clients are told to come back after a jittered delay in this range (no lockstep return).
RETRY_AFTER_RANGE = (2.0, 6.0)
#: A queue token keeps its holder's first arrival (its place) this long.
QUEUE_TOKEN_TTL = 300.0
#: A refused client that has not come back within two of the longest retry delays handed out (the SDKs
#: wait up to 1.5 times the delay) has given up: its entry stops counting ahead of newcomers. Should it
#: come back later, its token still carries its first arrival and it takes its place again.
WAITING_TTL = 2 * RETRY_AFTER_RANGE[1]
#: Queue tokens are tickets with the role ``QUEUE_ROLE``, so they can never be used as a viewer ticket
#: (``KeyRing.verify`` checks the purpose), nor a viewer ticket as a queue token.
QUEUE_USER_PREFIX = "q_"
#: Session request bodies are small JSON objects (a resume ticket is the largest field).
MAX_BODY = 16 * 1024
AT_CAPACITY_MESSAGE = "the platform is full; retry later with the queue token"


@dataclass
class Snapshot:
    core: list[NodeInfo] = field(default_factory=list)
    push: list[NodeInfo] = field(default_factory=list)
    counts: NodeCounts = field(default_factory=NodeCounts)
    connected: int = 0  # sessions push nodes hold
    sessions: dict[str, float] = field(default_factory=dict)  # the same, per push node id
    others_recent: int = 0  # recent admissions by other gatekeepers
    fresh: bool = False


class Gatekeeper:
    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        s = ctx.settings.gatekeeper
        self.licensed = s.licensed_capacity
        self.controller = CapacityController(initial=s.qos_initial_capacity, ceiling=s.licensed_capacity,
                                             max_step_per_node=s.qos_growth_per_push_node)
        self.slo = Slo({
            "fanout_p99_ms": s.slo_fanout_p99_ms,
            "core_p95_ms": s.slo_core_p95_ms,
            "loop_lag_ms": s.slo_loop_lag_ms,
            "queue_lag_s": s.slo_queue_lag_s,
            "cpu_busy": s.slo_cpu_busy,
            # the scheduler's synthetic probes (roles/scheduler/probe.py) against the same limits
            "probe_push_delay_ms": s.slo_fanout_p99_ms,
            "probe_core_rtt_ms": s.slo_core_p95_ms,
        })
        self.snapshot = Snapshot()
        self.admissions = Admissions()
        self.room = WaitingRoom(ttl=WAITING_TTL)
        self.rng = random.Random()

    # -- the numbers -------------------------------------------------------------------------------------
    def admitted(self, now: float) -> int:
        """Sessions the push nodes hold + admissions (ours and other gatekeepers') not connected yet."""
        recent = self.admissions.recent(now) + self.snapshot.others_recent
        return self.snapshot.connected + self.admissions.pending(now, recent, self.snapshot.sessions)

    def capacity(self) -> int:
        return min(self.licensed, self.controller.value)

    async def refresh_forever(self) -> None:
        while not self.ctx.draining.is_set():
            try:
                with trio.fail_after(SNAPSHOT_INTERVAL * 2):
                    nodes = await self.ctx.registry.nodes()
            except (BrokerUnavailable, trio.TooSlowError):
                # Keep deciding on the last snapshot: admitted clients must notice nothing (docs/reliability.md #9).
                self.snapshot.fresh = False
            else:
                self._apply(nodes, time.time())
            await trio.sleep(SNAPSHOT_INTERVAL)

    def _apply(self, nodes: list[NodeInfo], now: float) -> None:
        counts = NodeCounts(**{role: sum(1 for n in nodes if role in n.roles)
                               for role in ("core", "push", "worker", "scheduler")})
        unreachable = {node_id for n in nodes for node_id in n.unreachable}
        core = _reachable([n for n in nodes if "core" in n.endpoints], unreachable)
        registered_push = [n for n in nodes if "push_ws" in n.endpoints or "push_poll" in n.endpoints]
        push = _reachable(registered_push, unreachable)
        # Sessions still count on a node the probes cannot reach: refusing early is the safe side.
        sessions = {n.id: _sessions_of(n) for n in registered_push}
        connected = int(sum(sessions.values()))
        others = int(sum(n.load.get("recent_admissions", 0) for n in nodes if n.id != self.ctx.node_id))
        self.snapshot = Snapshot(core=core, push=push, counts=counts, connected=connected, sessions=sessions,
                                 others_recent=others, fresh=True)
        self.admissions.observe(now, sessions)
        own_recent = self.admissions.recent(now)
        self.ctx.load["recent_admissions"] = own_recent
        signals = [n.qos for n in nodes if _serves_admitted(n)]
        breaches = self.slo.breaches(signals)
        before, was_holding = self.controller.value, self.controller.holding
        pressure = self.slo.pressure(signals)
        capacity = self.controller.update(self.admitted(now), breaches, pressure,
                                          in_use=self.snapshot.connected, push_nodes=len(push))
        if breaches and capacity != before:
            event(log, "qos breach: capacity backs off", capacity=capacity, breaches=";".join(breaches[:5]))
        elif self.controller.holding != was_holding and not breaches:
            # Where growth stops and starts again is what an operator tuning the stops wants to see.
            event(log, "qos stop reached: capacity holds" if self.controller.holding
                  else "qos back under its stop: capacity may grow", capacity=capacity, pressure=round(pressure, 3))
        self.room.expire(now)
        self.ctx.metrics.admitted.set(self.admitted(now))
        self.ctx.metrics.capacity.set(self.capacity())

    # -- requests -----------------------------------------------------------------------------------------
    def status(self) -> GatekeeperStatus:
        now = time.time()
        admitted = self.admitted(now)
        capacity = self.capacity()
        return GatekeeperStatus(
            admitted=admitted, capacity=capacity, licensed_capacity=self.licensed,
            qos_capacity=self.controller.value, at_capacity=admitted >= capacity, nodes=self.snapshot.counts,
        )

    def _queue_position(self, token: str | None, now: float) -> tuple[str, float, str | None]:
        """(queue id, first arrival, token to hand back) — from a valid queue token or fresh."""
        if token:
            try:
                ticket = self.ctx.tickets.verify(token, role=QUEUE_ROLE, now=now)
                return ticket.user_id, ticket.issued_at, token
            except InvalidTicket:
                pass  # a forged or stale token just means a place at the back
        return f"{QUEUE_USER_PREFIX}{secrets.token_urlsafe(9)}", now, None

    def _refuse(self, queue_id: str, first_arrival: float, token: str | None, now: float) -> Refusal:
        self.room.wait(queue_id, first_arrival, now)
        if token is None:
            token, _ = self.ctx.tickets.issue(queue_id, ttl=QUEUE_TOKEN_TTL, role=QUEUE_ROLE, now=first_arrival)
        retry_after = round(self.rng.uniform(*RETRY_AFTER_RANGE), 2)
        self.ctx.metrics.admissions.labels("rejected").inc()
        body = {"error": {"code": "at_capacity", "message": AT_CAPACITY_MESSAGE, "retry_after": retry_after},
                "queue": token}
        return Refusal(msgspec.json.encode(body), str(max(1, round(retry_after))))

    def decide(self, body: bytes, now: float) -> Refusal | Place:
        """Refuse (503 at_capacity) or make a place for one ``POST /v1/session`` body.

        Shared by the route and the fast path (``fastpath.py``). Deciding a place has no side effect, so
        the fast path may decide again what the route will decide for real. A malformed body raises
        msgspec's errors (→ 400), a draining gatekeeper ``ApiError`` (→ 503 unavailable)."""
        req = session_request_decoder.decode(body) if body.strip() else SessionRequest()
        if self.ctx.draining.is_set():
            raise ApiError("unavailable", "this gatekeeper is shutting down", retry_after=1.0)
        queue_id, first_arrival, token = self._queue_position(_queue_token_of(body), now)
        free = self.capacity() - self.admitted(now)
        if free - self.room.ahead_of(first_arrival) <= 0:
            return self._refuse(queue_id, first_arrival, token, now)
        return Place(req, queue_id)

    def _resolve_user(self, req: SessionRequest, now: float) -> str:
        if req.resume:
            try:
                ticket = self.ctx.tickets.verify(req.resume, now=now,
                                                 allow_expired_for=self.ctx.settings.auth.resume_window)
                return ticket.user_id
            except (InvalidTicket, ExpiredTicket):
                pass  # an unusable resume ticket gets a new identity, not an error
        if req.user_id and self.ctx.settings.auth.trust_user_id:
            return req.user_id
        return f"u_{secrets.token_urlsafe(9)}"

    async def session(self) -> Response:
        now = time.time()
        data = await request.get_data(as_text=False)
        assert isinstance(data, bytes)  # as_text=False; Quart types both
        outcome = self.decide(data, now)
        if isinstance(outcome, Refusal):
            return Response(outcome.body, status=503, headers={"Retry-After": outcome.retry_after},
                            content_type="application/json")
        req = outcome.request
        core, push = self.snapshot.core, self.snapshot.push
        if not core or not push:
            raise ApiError("unavailable", "no core or push node is up yet", retry_after=2.0)
        self.room.leave(outcome.queue_id)
        user_id = self._resolve_user(req, now)
        # The name travels to core in the ticket (core names the profile on the ticket's first request): an
        # admission stays free of store calls, like every gatekeeper decision.
        ticket, claims = self.ctx.tickets.issue(user_id, ttl=self.ctx.settings.auth.ticket_ttl, name=req.name,
                                                now=now)
        self.admissions.add(now)
        self.ctx.metrics.admissions.labels("admitted").inc()
        wanted = req.transports or ["websocket", "polling"]
        response = SessionResponse(
            ticket=ticket, user_id=user_id, expires_at=claims.expires_at, server_time=now,
            core=[n.endpoints["core"] for n in order_core(user_id, _healthy_core(core, self.slo))],
            push=[_push_endpoints(n, wanted) for n in order_push(push, self.rng)],
            max_rtt_ms=self.ctx.settings.gatekeeper.max_rtt_ms,
        )
        return json_response(response)


class _QueueField(msgspec.Struct):
    queue: str | None = None


_queue_decoder = msgspec.json.Decoder(_QueueField)


def _queue_token_of(body: bytes) -> str | None:
    """The ``queue`` token of a returning rejected client (docs/api.md §3.1)."""
    if not body.strip():
        return None
    try:
        value = _queue_decoder.decode(body).queue
    except msgspec.ValidationError:
        return None
    return value if value and len(value) <= 1024 else None


def _serves_admitted(node: NodeInfo) -> bool:
    """Whether a node's QoS is the service admitted clients get. A gatekeeper-only node's is not: once
    in, clients never talk to it again. Counting it made a thundering herd cut capacity by itself (the
    flooded gatekeeper's own loop lag read as a platform breach; bench admission saw capacity fall to
    the floor)."""
    return any(role != "gatekeeper" for role in node.roles)


def _sessions_of(node: NodeInfo) -> float:
    """The sessions a push node holds: its distinct users (one ticket's many connections count once);
    connections and polls from a node that does not report users."""
    if "sessions" in node.load:
        return node.load["sessions"]
    return node.load.get("connections", 0) + node.load.get("polling_sessions", 0)


def _reachable(nodes: list[NodeInfo], unreachable: set[str]) -> list[NodeInfo]:
    """Nodes still registered but failing the scheduler's probes are routed around (dead is not slow).
    If every one fails, the probe itself is the likelier fault: keep listing them all."""
    reachable = [n for n in nodes if n.id not in unreachable]
    return reachable or nodes


def _healthy_core(nodes: list[NodeInfo], slo: Slo) -> list[NodeInfo]:
    healthy = [n for n in nodes if not slo.breaches([n.qos])]
    return healthy or nodes  # all overloaded: still list them rather than none


def _push_endpoints(node: NodeInfo, wanted: list[str]) -> PushEndpoints:
    return PushEndpoints(
        websocket=node.endpoints.get("push_ws") if "websocket" in wanted else None,
        polling=node.endpoints.get("push_poll") if "polling" in wanted else None,
    )


async def run(ctx: NodeContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    gatekeeper = Gatekeeper(ctx)
    ctx.gatekeeper = gatekeeper  # tests and in-process tools read its numbers
    app = create_app(ctx, "gatekeeper", max_body=MAX_BODY)
    app.add_url_rule("/v1/session", "session", gatekeeper.session, methods=["POST"])

    async def status() -> Response:
        return json_response(gatekeeper.status())

    app.add_url_rule("/v1/status", "status", status, methods=["GET"])
    async with trio.open_nursery() as nursery:
        # Refusals are answered beneath Quart (fastpath.py); everything else reaches the routes above.
        front = FastRefusals(app, gatekeeper, max_body=MAX_BODY)  # type: ignore[arg-type]  # see http.serve_http
        url = await nursery.start(serve_http, ctx, front, ctx.settings.gatekeeper.bind, "gatekeeper")
        ctx.endpoints["gatekeeper"] = ctx.public_url(url)
        await ctx.announce()
        # First snapshot before we say ready, so the first client is not refused for lack of one.
        with trio.move_on_after(SNAPSHOT_INTERVAL * 2):
            try:
                gatekeeper._apply(await ctx.registry.nodes(), time.time())
            except BrokerUnavailable:
                pass
        nursery.start_soon(gatekeeper.refresh_forever)
        task_status.started()
        await ctx.draining.wait()
