"""Redis on this machine for ``playtotv cluster up``, tests and benchmarks: a primary, a replica and three
Sentinels started from the ``redis-server`` binary on loopback ports, in a directory of their own.

Nothing is persisted (``save ""``, no AOF): a restarted data node comes back empty, which is what the
kill tests mean by "Redis lost its memory" (docs/reliability.md #16). Sentinels are tuned for a laptop and
for tests: a primary that does not answer for ``DOWN_AFTER_MS`` is failed over, so a failover takes a
few seconds instead of the default half minute.

Every process is ours: SIGKILL and restart are safe, and ``close()`` removes the directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import trio

from playtotv.devtools.nodeprocess import child_options

SERVICE_NAME = "mymaster"
LOOPBACK = "127.0.0.1"
#: How long a fresh redis-server or sentinel may take to answer PING on a loaded machine.
START_TIMEOUT = 15.0
#: Sentinel declares the primary down after this much silence. Low for a laptop cluster and the kill
#: tests; production keeps Redis' 5-30 s (config/DEPLOYMENT.md says why).
DOWN_AFTER_MS = 1000
#: A failover that did not complete in this time is retried by another Sentinel (2x this).
FAILOVER_TIMEOUT_MS = 4000
#: Sentinels that must agree the primary is down; two of three (a majority) also elect the leader.
QUORUM = 2
SENTINELS = 3
#: Full resynchronisation starts at once: the default waits 5 s for more replicas to join the transfer.
REPLICA_SYNC_ARGS = ("--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0")
#: Poll period while waiting for a process or for the Sentinels to agree.
POLL_INTERVAL = 0.05


class RedisBinaryMissing(RuntimeError):
    pass


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisBinaryMissing(
            "redis-server not found: install it (apt-get install redis-server) or run `bash tests/run.sh`"
        )
    return binary


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def encode_command(*command: str | int | bytes) -> bytes:
    """One command in RESP (an array of bulk strings), the only form Redis and Sentinel need."""
    parts = [c if isinstance(c, bytes) else str(c).encode() for c in command]
    return b"".join([b"*%d\r\n" % len(parts), *(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)])


class RedisError(Exception):
    """An error reply (``-ERR ...``)."""


class Incomplete(Exception):
    """``parse_reply`` needs more bytes."""


def parse_reply(data: bytes, start: int = 0) -> tuple[object, int]:
    """The RESP2 reply at ``data[start:]`` and the index after it; ``Incomplete`` when it is not all there.
    Sans-IO, so the trio, blocking and asyncio readers share it: ``+OK`` -> bytes, ``-ERR`` ->
    ``RedisError``, ``:1`` -> int, ``$`` -> bytes or None, ``*`` -> list or None."""
    end = data.find(b"\r\n", start)
    if end < 0:
        raise Incomplete
    kind, rest, after = data[start:start + 1], data[start + 1:end], end + 2
    if kind == b"+":
        return rest, after
    if kind == b"-":
        return RedisError(rest.decode(errors="replace")), after
    if kind == b":":
        return int(rest), after
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None, after
        if len(data) < after + size + 2:
            raise Incomplete
        return data[after:after + size], after + size + 2
    if kind == b"*":
        size = int(rest)
        if size < 0:
            return None, after
        items = []
        for _ in range(size):
            item, after = parse_reply(data, after)
            items.append(item)
        return items, after
    raise ValueError(f"unexpected RESP reply {data[start:start + 20]!r}")


#: What ``ReplyBuffer.add`` returns until the reply is complete.
PENDING = object()


class ReplyBuffer:
    """The bytes of one reply as they arrive, for both ``query`` and ``query_blocking``."""

    def __init__(self) -> None:
        self._data = b""

    def add(self, chunk: bytes) -> object:
        """The reply once ``chunk`` completes it, else ``PENDING``; ``ValueError`` if the peer hung up."""
        if not chunk:
            raise ValueError("connection closed before the whole reply")
        self._data += chunk
        try:
            return parse_reply(self._data)[0]
        except Incomplete:
            return PENDING


async def query(port: int, *command: str | int, timeout: float = 2.0) -> object:
    """One command to the Redis or Sentinel on ``port``: the reply, or None when it does not answer. A
    tiny client of its own: supervision must not depend on the client it is testing."""
    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream(LOOPBACK, port)
        except OSError:
            return None
        async with stream:
            try:
                await stream.send_all(encode_command(*command))
                buffer = ReplyBuffer()
                while (reply := buffer.add(await stream.receive_some(65536))) is PENDING:
                    pass
                return reply
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ValueError):
                return None
    return None


def query_blocking(port: int, *command: str | int, timeout: float = 2.0) -> object:
    """``query`` for synchronous callers (pytest fixtures, tests restarting their Redis): it blocks."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(encode_command(*command))
            buffer = ReplyBuffer()
            while (reply := buffer.add(sock.recv(65536))) is PENDING:
                pass
            return reply
    except (OSError, ValueError):
        return None


class RedisProcess:
    """One ``redis-server`` (data node or, with ``sentinel=True``, Sentinel) on a fixed loopback port."""

    def __init__(self, name: str, port: int, workdir: str, args: list[str], *, sentinel: bool = False) -> None:
        self.name = name
        self.port = port
        self.workdir = workdir
        self.args = args
        self.sentinel = sentinel
        #: A trio process (``start``) or, for synchronous callers, a plain one (``start_blocking``); the
        #: async waits need the first.
        self.proc: trio.Process | subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _command(self, extra: list[str]) -> list[str]:
        base = [redis_binary()]
        if self.sentinel:
            base.append(self._write_sentinel_config())
        return [*base, "--port", str(self.port), "--bind", LOOPBACK, "--dir", self.workdir,
                "--logfile", os.path.join(self.workdir, f"{self.name}.log"), *self.args, *extra]

    def _write_sentinel_config(self) -> str:
        # A Sentinel rewrites its configuration file (it records peers and failovers), so it needs one of
        # its own; a restart reuses it and so remembers the current primary.
        path = os.path.join(self.workdir, f"{self.name}.conf")
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write("sentinel deny-scripts-reconfig yes\n")
        return path

    async def start(self, extra: list[str] | None = None) -> RedisProcess:
        self.proc = await trio.lowlevel.open_process(
            self._command(list(extra or [])), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            **child_options(),
        )
        with trio.fail_after(START_TIMEOUT):
            while True:
                self._check_running()
                if self._is_ours(await query(self.port, "INFO", "server", timeout=0.5)):
                    return self
                await trio.sleep(POLL_INTERVAL)

    def start_blocking(self, extra: list[str] | None = None) -> RedisProcess:
        """``start`` for synchronous callers (pytest fixtures, tests that restart their Redis): it blocks."""
        self.proc = subprocess.Popen(self._command(list(extra or [])), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, **child_options())
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self._check_running()
            if self._is_ours(query_blocking(self.port, "INFO", "server", timeout=0.5)):
                return self
            time.sleep(POLL_INTERVAL)
        raise RuntimeError(f"{self.name} did not answer on port {self.port} (see {self.workdir})")

    def _check_running(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode} (see {self.workdir})")

    def _is_ours(self, info: object) -> bool:
        """The port answers, and it is this process that answers: with a port already taken, another
        Redis would answer while ours is exiting."""
        assert self.proc is not None
        return isinstance(info, bytes) and f"process_id:{self.proc.pid}\r\n".encode() in info

    def kill(self) -> None:
        """SIGKILL: the process and everything in its memory are gone."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)

    async def wait_exited(self) -> None:
        if self.proc is not None:
            assert isinstance(self.proc, trio.Process), "started with start_blocking: use wait_exited_blocking"
            await self.proc.wait()

    def wait_exited_blocking(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.proc is not None and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL / 5)

    def stop_blocking(self, timeout: float = 5.0) -> None:
        if not self.alive:
            return
        assert self.proc is not None
        self.proc.terminate()
        self.wait_exited_blocking(timeout)
        self.kill()
        self.wait_exited_blocking(timeout)

    async def stop(self, timeout: float = 5.0) -> None:
        if not self.alive:
            return
        if not isinstance(self.proc, trio.Process):  # started by start_blocking
            await trio.to_thread.run_sync(self.stop_blocking, timeout)
            return
        self.proc.terminate()
        with trio.move_on_after(timeout):
            await self.proc.wait()
            return
        self.kill()
        await self.proc.wait()


#: A data node keeps nothing on disk: a restarted one comes back empty.
DATA_ARGS = ("--save", "", "--appendonly", "no")


class RedisServer:
    """One plain Redis of its own on a free loopback port, driven synchronously: what the test fixtures
    and the benchmarks use. ``kill``/``start``/``restart`` are safe from inside a trio test (they block
    it briefly, as a crash would); ``restart`` comes back on the same port with empty memory."""

    def __init__(self, port: int | None = None, extra_args: list[str] | None = None) -> None:
        redis_binary()  # RedisBinaryMissing now, not at start
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="ptv-redis-")
        self.process = RedisProcess("redis", self.port, self.dir, [*DATA_ARGS, *(extra_args or [])])

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.proc.pid if self.process.proc is not None else None

    def start(self) -> RedisServer:
        self.process.start_blocking()
        return self

    def kill(self) -> None:
        """SIGKILL: the server and everything in its memory are gone."""
        self.process.kill()
        self.process.wait_exited_blocking()

    def stop(self) -> None:
        self.process.stop_blocking()

    def restart(self) -> None:
        """Kill and start again on the same port with empty memory."""
        self.kill()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class FailoverReport:
    old_primary: str
    new_primary: str
    seconds: float


class RedisTopology:
    """A primary, a replica and three Sentinels (``sentinel=True``, the default), or one plain Redis.

    ``url`` is what ``redis.url`` should be: ``redis+sentinel://...`` or ``redis://...``.
    """

    def __init__(self, *, sentinel: bool = True, workdir: str | None = None, ports: list[int] | None = None) -> None:
        self.use_sentinel = sentinel
        self._own_dir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="ptv-redis-")
        wanted = 2 + SENTINELS if sentinel else 1
        ports = list(ports or [])
        ports += [free_port() for _ in range(wanted - len(ports))]
        self.data = [RedisProcess("redis-a", ports[0], self.workdir, [*DATA_ARGS, *REPLICA_SYNC_ARGS])]
        self.sentinels: list[RedisProcess] = []
        if sentinel:
            self.data.append(RedisProcess("redis-b", ports[1], self.workdir, list(self.data[0].args)))
            self.sentinels = [RedisProcess(f"sentinel-{i + 1}", ports[2 + i], self.workdir, ["--sentinel"],
                                           sentinel=True) for i in range(SENTINELS)]

    # -- addresses ----------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if not self.use_sentinel:
            return f"redis://{self.data[0].address}/0"
        hosts = ",".join(s.address for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE_NAME}/0"

    def process_at(self, address: str) -> RedisProcess:
        for process in self.data:
            if process.address == address:
                return process
        raise KeyError(address)

    async def primary_address(self) -> str | None:
        """The primary as the Sentinels see it (first one that answers), or the only data node."""
        if not self.use_sentinel:
            return self.data[0].address
        for s in self.sentinels:
            reply = await query(s.port, "SENTINEL", "get-master-addr-by-name", SERVICE_NAME, timeout=1.0)
            if isinstance(reply, list) and len(reply) == 2:
                return f"{reply[0].decode()}:{reply[1].decode()}"
        return None

    async def primary(self) -> RedisProcess:
        address = await self.primary_address()
        if address is None:
            raise RuntimeError("no Sentinel answers")
        return self.process_at(address)

    # -- lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> RedisTopology:
        primary = self.data[0]
        await primary.start()
        if not self.use_sentinel:
            return self
        await self.data[1].start(["--replicaof", LOOPBACK, str(primary.port)])
        for s in self.sentinels:
            await s.start(self._sentinel_monitor_args(primary.port))
        await self.wait_settled()
        return self

    @staticmethod
    def _sentinel_monitor_args(primary_port: int) -> list[str]:
        return [
            "--sentinel", "monitor", SERVICE_NAME, LOOPBACK, str(primary_port), str(QUORUM),
            "--sentinel", "down-after-milliseconds", SERVICE_NAME, str(DOWN_AFTER_MS),
            "--sentinel", "failover-timeout", SERVICE_NAME, str(FAILOVER_TIMEOUT_MS),
            "--sentinel", "parallel-syncs", SERVICE_NAME, "1",
        ]

    async def wait_settled(self, timeout: float = 30.0) -> None:
        """Until the replica is in sync and every Sentinel knows the replica and its two peers: only then
        can a failover happen (a Sentinel that has not met its peers cannot reach a quorum)."""
        with trio.fail_after(timeout):
            while not await self._settled():  # noqa: ASYNC110 - the state is Redis's, not an event of ours
                await trio.sleep(POLL_INTERVAL * 4)

    async def _settled(self) -> bool:
        primary_address = await self.primary_address()
        if primary_address is None:
            return False
        primary = self.process_at(primary_address)
        info = await query(primary.port, "INFO", "replication")
        if not isinstance(info, bytes) or b"state=online" not in info:
            return False
        for s in self.sentinels:
            reply = await query(s.port, "SENTINEL", "master", SERVICE_NAME)
            fields = _pairs(reply)
            if fields.get("num-slaves", "0") == "0" or int(fields.get("num-other-sentinels", "0")) < SENTINELS - 1:
                return False
            if f"{fields.get('ip')}:{fields.get('port')}" != primary_address:
                return False
        return True

    async def wait_failover(self, old_primary: str, timeout: float = 30.0) -> FailoverReport:
        """Until the Sentinels name a primary other than ``old_primary`` and it accepts writes."""
        started = trio.current_time()
        with trio.fail_after(timeout):
            while True:
                address = await self.primary_address()
                if address is not None and address != old_primary:
                    role = await query(self.process_at(address).port, "ROLE")
                    if isinstance(role, list) and role and role[0] == b"master":
                        return FailoverReport(old_primary, address, trio.current_time() - started)
                await trio.sleep(POLL_INTERVAL)

    async def kill_primary(self) -> RedisProcess:
        primary = await self.primary()
        primary.kill()
        await primary.wait_exited()
        return primary

    async def rejoin(self, process: RedisProcess) -> None:
        """Start a dead data node again, as a replica of the current primary (so an empty process can
        never come back as the primary and wipe what the replica kept)."""
        current = await self.primary_address()
        extra = []
        if current is not None and current != process.address:
            host, port = current.split(":")
            extra = ["--replicaof", host, port]
        await process.start(extra)

    async def restart_empty(self) -> None:
        """Every data node killed and started again with empty memory (docs/reliability.md #16). With
        Sentinel, the primary comes back at its old address before the Sentinels notice, and the replica
        follows it."""
        primary_address = await self.primary_address()
        assert primary_address is not None
        primary = self.process_at(primary_address)
        for process in self.data:
            process.kill()
        for process in self.data:
            await process.wait_exited()
        await primary.start()
        for process in self.data:
            if process is not primary:
                await process.start(["--replicaof", LOOPBACK, str(primary.port)])

    async def close(self) -> None:
        for process in [*self.sentinels, *self.data]:
            process.kill()
        for process in [*self.sentinels, *self.data]:
            with trio.move_on_after(5):
                await process.wait_exited()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "data_nodes": [p.address for p in self.data],
            "sentinels": [p.address for p in self.sentinels],
            "service": SERVICE_NAME if self.use_sentinel else None,
        }


def _pairs(reply: object) -> dict[str, str]:
    """A Sentinel's flat ``[key, value, key, value, ...]`` reply as text."""
    if not isinstance(reply, list):
        return {}
    return {bytes(k).decode(): bytes(v).decode() for k, v in zip(reply[0::2], reply[1::2], strict=False)
            if isinstance(k, bytes) and isinstance(v, bytes)}


__all__ = ["FailoverReport", "RedisProcess", "RedisServer", "RedisTopology", "SERVICE_NAME", "free_port", "query",
           "query_blocking"]
