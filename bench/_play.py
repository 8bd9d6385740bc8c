"""Shared by ``bench answers`` and ``bench worker``: node processes, a director, a raw HTTP load client.

The load client speaks HTTP/1.1 over plain trio streams with pre-built requests and minimal response
parsing: an order of magnitude cheaper per request than httpx, so one client process can outrun one
server process and the figures measure the server, not the client.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from typing import Any, Awaitable, Callable, Iterator

import httpx
import trio

from playtotv.devtools.nodeprocess import NodeProcess

SECRET = "bench-secret-0123456789abcdef"
DIRECTOR_KEY = "dk_bench_director_key"
OUT_DIR = os.path.join("bench", "out")


class LineReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def line(self) -> str:
        while b"\n" not in self.buffer:
            chunk = await self.stream.receive_some(1 << 16)
            if not chunk:
                raise EOFError("process closed its output")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode(errors="replace").strip()


def node_env(redis_url: str, db_path: str, node_id: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PLAYTOTV_REDIS_URL": redis_url,
        "PLAYTOTV_STORE_URL": f"sqlite:///{db_path}",
        "PLAYTOTV_AUTH_SECRET": SECRET,
        "PLAYTOTV_AUTH_DIRECTOR_KEYS": DIRECTOR_KEY,
        "PLAYTOTV_NODE_ID": node_id,
        "PLAYTOTV_CORE_BIND": "127.0.0.1:0",
        # Every benchmark's clients come from this one address: no per-address limit on new sessions.
        "PLAYTOTV_GATEKEEPER_SESSION_RATE": "0",
        **{f"PLAYTOTV_{k.upper()}": v for k, v in extra.items()},
    }


async def add_episode(store_url: str, episode_id: str) -> None:
    """Push lets clients follow only channels of episodes in the store: put a benchmark's own there
    (insert-if-absent, so calling it again is harmless)."""
    from playtotv.gameplay import schema
    from playtotv.gameplay.documents import EpisodeDoc, to_doc
    from playtotv.store import open_store

    async with open_store(store_url) as store:
        await store.insert(schema.EPISODES, to_doc(EpisodeDoc(id=episode_id, show_id="bench", title="bench",
                                                              mode="live")))


async def start_process(cmd: list[str] | None, env: dict[str, str], log_name: str, *,
                        roles: str = "all") -> NodeProcess:
    """Start ``cmd`` (a benchmark's own server printing the node's lines), or a node of ``roles`` when
    ``cmd`` is None; return once it printed ``ready``. Its log is ``bench/out/<log_name>``, this run's."""
    os.makedirs(OUT_DIR, exist_ok=True)
    log_path = os.path.join(OUT_DIR, log_name)
    open(log_path, "wb").close()
    return await NodeProcess(roles, env, name=log_name, command=cmd, log_path=log_path).start()


async def start_node(roles: str, env: dict[str, str], log_name: str) -> NodeProcess:
    return await start_process(None, env, log_name, roles=roles)


class Director:
    def __init__(self, http: httpx.AsyncClient, core: str) -> None:
        self.http = http
        self.core = core
        self.headers = {"Authorization": f"Bearer {DIRECTOR_KEY}"}

    async def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        r = await self.http.post(self.core + path, json=body or {}, headers=self.headers)
        r.raise_for_status()
        return r.json()

    async def live_episode(self) -> str:
        show = await self.post("/v1/shows", {"title": "Bench"})
        episode = await self.post(f"/v1/shows/{show['id']}/episodes", {"title": "Bench episode"})
        await self.post(f"/v1/episodes/{episode['id']}/start")
        return episode["id"]

    async def open_quiz(self, episode_id: str, duration: float = 3600) -> str:
        created = await self.post(f"/v1/episodes/{episode_id}/interactions", {
            "kind": "quiz", "prompt": "Bench?", "options": [{"id": "a", "label": "A"}, {"id": "b", "label": "B"}],
            "correct": "a", "duration": duration})
        await self.post(f"/v1/interactions/{created['id']}/open")
        return created["id"]


class KeepAliveHttp:
    """One keep-alive HTTP/1.1 connection; ``request(raw)`` sends pre-built bytes and returns
    (status, body)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def connect(cls, url: str) -> "KeepAliveHttp":
        host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        return cls(await trio.open_tcp_stream(host, int(port)))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        await self.stream.send_all(raw)
        while b"\r\n\r\n" not in self.buffer:
            chunk = await self.stream.receive_some(1 << 16)
            if not chunk:
                raise EOFError("server closed the connection")
            self.buffer += chunk
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for header in head.split(b"\r\n")[1:]:
            name, _, value = header.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
                break
        while len(rest) < length:
            chunk = await self.stream.receive_some(1 << 16)
            if not chunk:
                raise EOFError("server closed the connection")
            rest += chunk
        self.buffer = rest[length:]
        return status, rest[:length]

    async def aclose(self) -> None:
        await self.stream.aclose()


def post_request(path: str, body: bytes, token: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def get_request(path: str, token: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n".encode()


def now() -> float:
    return time.perf_counter()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process used so far (from /proc): a cost measure that, unlike
    throughput, does not depend on what else the shared machine is running."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid`` (``/proc/<pid>/task/*/schedstat``: nanoseconds, where
    ``/proc/<pid>/stat``'s clock ticks are too coarse for one second of a 0.1-CPU budget)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended meanwhile
    return total / 1e9


def run_on_private_redis(run: Callable[[Any, str], Awaitable[dict[str, Any]]]) -> int:
    """``run(redis, db_path)`` against ``redis_and_workdir``; its result goes to stdout as one JSON line."""
    with redis_and_workdir() as (redis, db):
        result = trio.run(run, redis, db)
    print(json.dumps(result))
    return 0


@contextlib.contextmanager
def redis_and_workdir() -> Iterator[tuple[Any, str]]:
    """A private redis-server on a free port and a temporary SQLite path, for one benchmark run."""
    from playtotv.devtools.localredis import RedisServer

    redis = RedisServer().start()
    try:
        with tempfile.TemporaryDirectory(prefix="ptv-bench-") as tmp:
            yield redis, os.path.join(tmp, "bench.db")
    finally:
        redis.close()
