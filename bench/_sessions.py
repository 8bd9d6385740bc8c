"""Clients arriving through the gatekeeper, as the SDK would: ``POST /v1/session``, honouring 503s.

Used by ``bench overload``. Requests go over a small pool of keep-alive connections (the raw client of
``bench/_play.py``), so hundreds of waiting clients do not hold hundreds of sockets to the gatekeeper.
A refused client sleeps the ``retry_after`` it was given (the gatekeeper jitters it) and returns with its
``queue`` token, keeping its place; an admitted one hands its ticket and first push endpoint to
``connect`` and is done.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import msgspec
import trio

from bench._play import KeepAliveHttp

#: Keep-alive connections to the gatekeeper (an SDK process would hold one; this is many clients).
POOL_SIZE = 16
#: Bound on one gatekeeper request; a stuck request counts as an error and the client tries again.
REQUEST_TIMEOUT = 10.0
#: Pause after an error (not a 503: those say how long to wait).
ERROR_PAUSE = 1.0
_decode = msgspec.json.Decoder(dict[str, Any]).decode


def _post(body: bytes) -> bytes:
    return (b"POST /v1/session HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


_NEW = _post(b'{"name":"bench","transports":["websocket"]}')
_STATUS = b"GET /v1/status HTTP/1.1\r\nHost: bench\r\n\r\n"


class SessionPool:
    def __init__(self, url: str, size: int = POOL_SIZE) -> None:
        self.url = url
        self.slots = trio.Semaphore(size)
        self.idle: list[KeepAliveHttp] = []

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """(status, body); raises OSError / EOFError / trio.TooSlowError when the request failed."""
        async with self.slots:
            client = self.idle.pop() if self.idle else await KeepAliveHttp.connect(self.url)
            try:
                with trio.fail_after(REQUEST_TIMEOUT):
                    answer = await client.request(raw)
            except BaseException:
                await client.aclose()  # a half-read connection cannot be reused
                raise
            self.idle.append(client)
            return answer

    async def status(self) -> dict[str, Any]:
        try:
            status, body = await self.request(_STATUS)
        except (OSError, EOFError, trio.BrokenResourceError, trio.TooSlowError):
            return {}
        return _decode(body) if status == 200 else {}


class Arrivals:
    """New clients at a steady rate; each retries until admitted or the caller's nursery is cancelled."""

    def __init__(self, pool: SessionPool, connect: Callable[[str, str], Awaitable[None]]) -> None:
        self.pool = pool
        self.connect = connect
        self.arrived = 0
        self.admitted = 0
        self.refused = 0  # 503 answers (a client refused three times counts three)
        self.errors = 0

    @property
    def waiting(self) -> int:
        """Clients that arrived and are not admitted yet (refused and retrying, or asking)."""
        return self.arrived - self.admitted

    async def run(self, rate: float, nursery: trio.Nursery, *, total: int | None = None,
                  waiting: int | None = None) -> None:
        """``rate`` new clients a second, ``total`` in all (None: until cancelled), pausing while
        ``waiting`` clients are already waiting: a standing queue at the door however much the platform
        admits meanwhile, without a crowd whose retries would load the machine the measured node shares."""
        due = trio.current_time()
        started = 0
        while total is None or started < total:
            due += 1.0 / rate
            await trio.sleep_until(due)
            if waiting is not None and self.waiting >= waiting:
                due = trio.current_time()  # no burst of the arrivals "owed" meanwhile once room comes
                continue
            nursery.start_soon(self.arrive)
            started += 1

    async def arrive(self) -> None:
        self.arrived += 1  # counted before its first request, so ``waiting`` bounds the requests too
        raw = _NEW
        while True:
            try:
                status, body = await self.pool.request(raw)
            except (OSError, EOFError, trio.BrokenResourceError, trio.TooSlowError):
                status, body = 0, b""
            if status == 200:
                session = _decode(body)
                websockets = [p["websocket"] for p in session["push"] if p.get("websocket")]
                if websockets:
                    self.admitted += 1
                    await self.connect(websockets[0], session["ticket"])
                    return
            if status == 503:
                answer = _decode(body)
                if "queue" in answer:  # at_capacity (an `unavailable` 503 carries no token)
                    self.refused += 1
                    raw = _post(msgspec.json.encode({"name": "bench", "transports": ["websocket"],
                                                     "queue": answer["queue"]}))
                else:
                    self.errors += 1
                await trio.sleep(float(answer.get("error", {}).get("retry_after", ERROR_PAUSE)))
                continue
            self.errors += 1
            await trio.sleep(ERROR_PAUSE)
