"""``playtotv warmup``: ramp synthetic viewers through the gatekeeper before air time.

    playtotv warmup --gatekeeper http://gk.example:8000 --clients 2000 --seconds 60 [--episode ID]

Why: the gatekeeper's QoS capacity only grows while admissions use it (``roles/gatekeeper/capacity.py``),
so a platform that was idle all day would open the show at its initial capacity and turn the first wave
away; connection pools, caches and the autoscaler's signals are cold too. The warm-up admits ``clients``
sessions evenly over ``seconds``; each calls core once (``GET /v1/episodes/ID``: the ticket check, the rate
limiter, the cache and the store, without writing anything) and holds a WebSocket on the push node it was
given (subscribed to the episode channel when ``--episode`` is given) until the ramp is over plus ``--hold``
seconds. It prints one JSON object: admitted, rejected (503), errors and latency percentiles.

It talks only to the gatekeeper named on the command line and the endpoints that gatekeeper hands out,
and it is bounded (``MAX_CLIENTS``, ``MAX_SECONDS``): it is a warm-up, not a load test.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import trio

from playtotv.percentile import percentile

if TYPE_CHECKING:
    import httpx

# httpx and trio_websocket are imported where used: every ``playtotv`` command (``serve`` included)
# builds this module's argument parser, and must not pay for them.

#: Bounds: one warm-up process holds one WebSocket per client (file descriptors), and a warm-up longer
#: than ten minutes is a soak test.
MAX_CLIENTS = 5000
MAX_SECONDS = 600.0
#: Concurrent REST requests (joins and core calls); more only queues in the client.
HTTP_CONCURRENCY = 100
#: Bound of each step of one synthetic viewer.
STEP_TIMEOUT = 10.0
#: Episode id used for the core call when none is given: the call is authenticated and answered 404.
PROBE_EPISODE = "warmup-probe"


@dataclass
class Figures:
    admitted: int = 0
    rejected: int = 0
    errors: int = 0
    join_ms: list[float] = field(default_factory=list)
    core_ms: list[float] = field(default_factory=list)
    push_ms: list[float] = field(default_factory=list)
    error_kinds: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


def percentiles(samples: list[float]) -> dict[str, float | None]:
    ordered = sorted(samples)
    picked = {"p50": percentile(ordered, 0.5), "p95": percentile(ordered, 0.95), "max": percentile(ordered, 1.0)}
    return {name: None if value is None else round(value, 1) for name, value in picked.items()}


class Warmup:
    def __init__(self, gatekeeper: str, clients: int, seconds: float, *, episode: str | None = None,
                 hold: float = 5.0) -> None:
        check_target(gatekeeper)
        if not 1 <= clients <= MAX_CLIENTS:
            raise ValueError(f"--clients must be between 1 and {MAX_CLIENTS}")
        if not 0 < seconds <= MAX_SECONDS:
            raise ValueError(f"--seconds must be above 0 and at most {MAX_SECONDS:g}")
        self.gatekeeper = gatekeeper.rstrip("/")
        self.clients = clients
        self.seconds = seconds
        self.episode = episode
        self.hold = max(0.0, min(hold, MAX_SECONDS))
        self.figures = Figures()
        self._limiter = trio.CapacityLimiter(HTTP_CONCURRENCY)

    async def run(self) -> dict[str, Any]:
        import httpx

        limits = httpx.Limits(max_connections=HTTP_CONCURRENCY, max_keepalive_connections=HTTP_CONCURRENCY)
        async with httpx.AsyncClient(timeout=STEP_TIMEOUT, limits=limits) as http:
            before = await self._status(http)
            release = trio.Event()
            async with trio.open_nursery() as nursery:
                interval = self.seconds / self.clients
                for _ in range(self.clients):
                    nursery.start_soon(self._viewer, http, release)
                    await trio.sleep(interval)
                await trio.sleep(self.hold)
                after = await self._status(http)
                release.set()
        return self.report(before, after)

    def report(self, before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
        f = self.figures
        return {
            "gatekeeper": self.gatekeeper, "clients": self.clients, "seconds": self.seconds,
            "admitted": f.admitted, "rejected": f.rejected, "errors": f.errors, "error_kinds": f.error_kinds,
            "join_ms": percentiles(f.join_ms), "core_ms": percentiles(f.core_ms),
            "push_ms": percentiles(f.push_ms),
            "capacity_before": (before or {}).get("capacity"), "capacity_after": (after or {}).get("capacity"),
            "admitted_after": (after or {}).get("admitted"),
        }

    async def _status(self, http: httpx.AsyncClient) -> dict[str, Any] | None:
        import httpx

        try:
            response = await http.get(f"{self.gatekeeper}/v1/status")
            return response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    async def _viewer(self, http: httpx.AsyncClient, release: trio.Event) -> None:
        session = await self._join(http)
        if session is None:
            return
        await self._call_core(http, session)
        await self._hold_push(session, release)

    async def _join(self, http: httpx.AsyncClient) -> dict[str, Any] | None:
        import httpx

        async with self._limiter:
            started = trio.current_time()
            try:
                response = await http.post(f"{self.gatekeeper}/v1/session",
                                           json={"name": "warmup", "transports": ["websocket"]})
            except httpx.HTTPError as e:
                self.figures.error(f"join:{type(e).__name__}")
                return None
        if response.status_code == 503:
            self.figures.rejected += 1
            return None
        if response.status_code != 200:
            self.figures.error(f"join:{response.status_code}")
            return None
        self.figures.admitted += 1
        self.figures.join_ms.append((trio.current_time() - started) * 1000)
        return response.json()

    async def _call_core(self, http: httpx.AsyncClient, session: dict[str, Any]) -> None:
        import httpx

        if not session.get("core"):
            return
        episode = self.episode or PROBE_EPISODE
        url = f"{session['core'][0]}/v1/episodes/{episode}"
        async with self._limiter:
            started = trio.current_time()
            try:
                response = await http.get(url, headers={"Authorization": f"Bearer {session['ticket']}"})
            except httpx.HTTPError as e:
                self.figures.error(f"core:{type(e).__name__}")
                return
        expected = 200 if self.episode else 404
        if response.status_code != expected:
            self.figures.error(f"core:{response.status_code}")
            return
        self.figures.core_ms.append((trio.current_time() - started) * 1000)

    async def _hold_push(self, session: dict[str, Any], release: trio.Event) -> None:
        from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

        push = [p for p in session.get("push", []) if p.get("websocket")]
        if not push:
            return
        url = f"{push[0]['websocket']}?ticket={session['ticket']}"
        started = trio.current_time()
        try:
            with trio.fail_after(STEP_TIMEOUT):
                async with open_websocket_url(url) as ws:
                    await ws.get_message()  # the unasked ``subscribed`` of the user channel
                    if self.episode:
                        frame = {"type": "subscribe", "channel": f"episode:{self.episode}"}
                        await ws.send_message(json.dumps(frame))
                        await ws.get_message()
                    self.figures.push_ms.append((trio.current_time() - started) * 1000)
                    with trio.CancelScope(deadline=trio.current_time() + self.seconds + self.hold + STEP_TIMEOUT):
                        await release.wait()
        except (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError) as e:
            self.figures.error(f"push:{type(e).__name__}")


def check_target(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("--gatekeeper must be an http:// or https:// URL naming the gatekeeper")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gatekeeper", required=True, help="gatekeeper URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--clients", type=int, required=True, help=f"synthetic viewers (1..{MAX_CLIENTS})")
    parser.add_argument("--seconds", type=float, required=True, help="ramp duration")
    parser.add_argument("--episode", default=None, help="episode to read and follow (optional)")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds to hold sessions after the ramp")


def run_cli(args: argparse.Namespace) -> int:
    try:
        warmup = Warmup(args.gatekeeper, args.clients, args.seconds, episode=args.episode, hold=args.hold)
    except ValueError as e:
        print(f"playtotv warmup: {e}", file=sys.stderr)
        return 2
    print(json.dumps(trio.run(warmup.run), sort_keys=True), flush=True)
    return 0
