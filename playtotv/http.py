"""HTTP listeners on Hypercorn + quart-trio: app factory with the ops routes, JSON errors and metrics.

Every HTTP listener of every role serves ``/healthz``, ``/readyz`` and ``/metrics`` (docs/api.md §6).
Every response carries CORS headers and preflights are answered (the web pages call other roles' ports).
Errors always leave as docs/api.md's error body: an ``ApiError`` raised anywhere in a handler, Quart's own
404/405/413, a malformed body; an unexpected exception becomes a logged 500 with the same shape.

Connections: every listener accepts through ``playtotv.accept`` (caps per listener and per client
address; accept errors logged once per interval) and bounds each connection's time with
``playtotv.httpdeadlines`` (``node.request_timeout``). Hypercorn speaks HTTP on each connection: its
trio ``TCPServer``, ``Lifespan`` and ``WorkerContext`` are used directly (as of hypercorn 0.17-0.18),
since its ``serve`` has no place for our own accept loop.
"""

from __future__ import annotations

import logging
import resource
import time
from functools import partial
from http import HTTPStatus
from typing import TYPE_CHECKING

import msgspec
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import repr_socket_addr, wrap_app
from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from playtotv.accept import node_gate, serve_tcp
from playtotv.httpdeadlines import CLOCK_KEY, ClockedStream, ConnectionClock, RequestDeadlines
from playtotv.logs import event
from playtotv.protocol.errors import ApiError, bad_request
from playtotv.protocol.rest import Health, Readiness

if TYPE_CHECKING:
    from playtotv.context import NodeContext

log = logging.getLogger("playtotv.http")

#: Largest request head Hypercorn buffers before answering 400 (slowloris / oversized headers).
MAX_INCOMPLETE_BYTES = 16 * 1024
#: Pending connections the kernel queues for each HTTP listener (a flash crowd arrives at once).
LISTEN_BACKLOG = 1024
#: ``node.max_connections = 0`` never caps an HTTP listener below this, however low the open-file limit.
MIN_AUTO_CONNECTIONS = 64
#: Default cap for request bodies; roles lower it where docs/api.md says so (core: 16 KiB).
DEFAULT_MAX_BODY = 64 * 1024

#: CORS: the web pages (served by core) call the gatekeeper, core and push polling on other ports. Every
#: credential is a bearer token, never a cookie, so any origin may call: a page elsewhere gains nothing it
#: could not do with curl. ``Authorization`` must be listed by name (a wildcard does not cover it).
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Expose-Headers": "Retry-After",
}
#: Browsers cache a preflight this long (seconds), sparing one OPTIONS round trip per call.
CORS_MAX_AGE = "600"

#: Label values of the request metrics come from closed sets: anything a client chooses (a made-up
#: method, a status a handler never returns) would otherwise add a time series per distinct value, kept
#: for the life of the process. Routes are Quart's rule templates ("unmatched" when none matched).
METRIC_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
METRIC_STATUSES = frozenset(status.value for status in HTTPStatus)

_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "bad_request", 413: "bad_request", 429: "rate_limited", 503: "unavailable"}


def json_response(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Encode with msgspec (Structs, dicts, lists) — one encoder for every response."""
    return Response(msgspec.json.encode(payload), status=status, headers=headers,
                    content_type="application/json")


def api_error_response(err: ApiError, status: int | None = None) -> Response:
    return Response(err.encode(), status=status or err.status, headers=err.headers(),
                    content_type="application/json")


def track_inflight(app: QuartTrio, ctx: NodeContext, role: str) -> None:
    """Count requests in progress on ``app`` in ``ctx.inflight`` and its gauge (teardown runs whatever the
    outcome, errors included); the heartbeat reports the node's total as ``load["inflight"]``."""
    gauge = ctx.metrics.inflight.labels(role)
    counts = ctx.inflight
    counts.setdefault(role, 0)

    @app.before_request
    async def _enter() -> None:
        counts[role] += 1
        gauge.inc()

    @app.teardown_request
    async def _leave(_exc: BaseException | None) -> None:
        counts[role] -= 1
        gauge.dec()


def create_app(ctx: NodeContext, role: str, *, max_body: int = DEFAULT_MAX_BODY) -> QuartTrio:
    # static_folder=None: Quart's default would serve ``<cwd>/static/*`` on every listener (whatever the
    # working directory holds). Pages that need files register their own routes (roles/core/web.py).
    app = QuartTrio(f"playtotv.{role}", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = max_body
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    track_inflight(app, ctx, role)  # an autoscaling gauge (playtotv.autoscale_gauges)

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response(Health(status="ok", node=ctx.node_id))

    @app.get("/readyz")
    async def readyz() -> Response:
        body = Readiness(ready=ctx.ready, checks=ctx.checks, draining=ctx.draining.is_set())
        return json_response(body, status=200 if ctx.ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        payload, content_type = ctx.metrics.render()
        return Response(payload, content_type=content_type)

    @app.before_request
    async def _start_timer() -> Response | None:
        g.started = time.perf_counter()
        return _preflight()

    @app.after_request
    async def _record(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        started = getattr(g, "started", None)
        if started is not None:
            ctx.metrics.latency.labels(role, rule).observe(time.perf_counter() - started)
        ctx.metrics.requests.labels(role, metric_method(request.method), rule,
                                    metric_status(response.status_code)).inc()
        response.headers.update(CORS_HEADERS)
        return response

    @app.errorhandler(ApiError)
    async def _api_error(err: ApiError) -> Response:
        return api_error_response(err)

    @app.errorhandler(msgspec.ValidationError)
    async def _validation_error(err: msgspec.ValidationError) -> Response:
        return api_error_response(bad_request(err))

    @app.errorhandler(msgspec.DecodeError)
    async def _decode_error(err: msgspec.DecodeError) -> Response:
        return api_error_response(bad_request(err))

    @app.errorhandler(HTTPException)
    async def _http_error(err: HTTPException) -> Response:
        code = _STATUS_CODES.get(err.code or 500, "bad_request")
        response = api_error_response(ApiError(code, err.description or err.name), status=err.code or 500)
        if isinstance(err, MethodNotAllowed) and err.valid_methods:
            response.headers["Allow"] = ", ".join(err.valid_methods)  # RFC 9110: a 405 says what is allowed
        return response

    @app.errorhandler(Exception)
    async def _unexpected(err: Exception) -> Response:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return api_error_response(ApiError("unavailable", "internal error"), status=500)

    return app


def metric_method(method: str) -> str:
    return method if method in METRIC_METHODS else "other"


def metric_status(status: int) -> str:
    return str(status) if status in METRIC_STATUSES else f"{status // 100}xx"


def _preflight() -> Response | None:
    """Answer a CORS preflight for any path that has a route (whatever its methods): 204 + CORS headers
    (added by the after-request hook). An unknown path keeps its 404."""
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return None
    if request.routing_exception is not None and not isinstance(request.routing_exception, MethodNotAllowed):
        return None
    return Response(b"", status=204, headers={"Access-Control-Max-Age": CORS_MAX_AGE})


def _hypercorn_config(ctx: NodeContext, bind: str) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [bind]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    # Hypercorn's own idle timer agrees with the connection clock's (playtotv.httpdeadlines).
    config.keep_alive_timeout = ctx.settings.node.request_timeout
    config.h11_max_incomplete_size = MAX_INCOMPLETE_BYTES
    config.graceful_timeout = ctx.settings.node.drain_seconds
    config.backlog = LISTEN_BACKLOG
    return config


def max_connections(ctx: NodeContext) -> int:
    """``node.max_connections``, or when 0 a quarter of the open-file limit (0: no cap when unlimited)."""
    configured = ctx.settings.node.max_connections
    if configured:
        return configured
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 0 if soft == resource.RLIM_INFINITY else max(MIN_AUTO_CONNECTIONS, soft // 4)


async def serve_http(
    ctx: NodeContext, app: QuartTrio, bind: str, role: str,
    *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``bind`` until the node drains; report the bound URL (port 0 resolved).

    Hypercorn's ``serve`` with our own accept loop (``playtotv.accept``: caps, resource errors) and a
    clock per connection (``playtotv.httpdeadlines``); hypercorn still speaks HTTP on each connection
    (its trio ``TCPServer``), and the drain is its own: stop accepting, close idle connections, give
    busy ones ``node.drain_seconds``."""
    config = _hypercorn_config(ctx, bind)
    sockets = config.create_sockets().insecure_sockets
    listeners = []
    for sock in sockets:
        sock.listen(config.backlog)
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
    url = "http://" + repr_socket_addr(sockets[0].family, sockets[0].getsockname())
    # Our middlewares type ASGI messages as plain dicts (httpdeadlines.Message); Quart and Hypercorn type
    # them as unions of TypedDicts, which a dict-typed callable can never match: the boundary is untyped.
    asgi = wrap_app(RequestDeadlines(app), config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
    lifespan_state: dict[str, object] = {}
    lifespan = Lifespan(asgi, config, lifespan_state)
    context = WorkerContext(None)
    gate = node_gate(ctx, role, max_connections(ctx))
    timeout = ctx.settings.node.request_timeout

    async def serve_connection(stream: trio.SocketStream) -> None:
        clock = ConnectionClock(timeout)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(clock.watch, stream, nursery.cancel_scope)
            await TCPServer(asgi, config, context, {**lifespan_state, CLOCK_KEY: clock},
                            ClockedStream(stream, clock))  # type: ignore[arg-type]  # duck-types the stream
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as accepting:
                await accepting.start(partial(serve_tcp, serve_connection, listeners, gate,
                                              handler_nursery=connections))
                event(log, "listening", role=role, url=url)
                ctx.on_listening(role, url)
                task_status.started(url)
                await ctx.draining.wait()
                accepting.cancel_scope.cancel()  # closes the listeners
            await context.terminated.set()  # idle connections close now, the others after their response
            connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


async def serve_ops(ctx: NodeContext, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """``node.ops_bind``: health, readiness and metrics for processes without a listener of their own."""
    assert ctx.settings.node.ops_bind is not None
    app = create_app(ctx, "ops")
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_http, ctx, app, ctx.settings.node.ops_bind, "ops")
        ctx.endpoints["ops"] = ctx.public_url(url)
        task_status.started(url)
