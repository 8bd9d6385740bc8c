"""The listeners against a client that holds connections: timeouts, caps, and running out of descriptors.

Real sockets against a real node: requests whose body never comes, answers given before the body, caps
per listener and per client address (loopback accepts any 127.0.0.0/8 source, so 127.0.0.2 is another
client), and accept() failing with EMFILE in a node whose open-file limit the test lowers.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import resource
import sys
from functools import partial
from urllib.parse import urlsplit

import httpx
import pytest
import trio
import trio.testing

from playtotv.accept import LOG_INTERVAL, ConnectionGate, ConnectionLimits, serve_tcp
from tests.inprocess import DEFAULTS, start_node
from playtotv.devtools.nodeprocess import NodeProcess

ALL_ROLES = ["gatekeeper", "core", "push", "worker", "scheduler"]
#: The request timeout these tests configure: short, so that stalled clients are closed quickly.
REQUEST_TIMEOUT = 1.0
#: Every wait for the server to close a connection: far beyond REQUEST_TIMEOUT, so only a server that
#: never closes fails (no timing assertion).
CLOSE_BOUND = 30.0
DIRECTOR = {"Authorization": f"Bearer {DEFAULTS['auth_director_keys']}"}


async def connect(url: str, source: str = "127.0.0.1") -> trio.SocketStream:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect((parts.hostname, parts.port))
    return trio.SocketStream(sock)


async def read_to_end(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    received = b""
    while True:
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return received
        if not data:
            return received
        received += data


async def status_of(stream: trio.SocketStream, path: str = "/healthz") -> int:
    """One GET on an open connection; its status (0 if the server closed instead of answering)."""
    try:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    except trio.BrokenResourceError:
        return 0
    head = b""
    while b"\r\n" not in head:
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return 0
        if not data:
            return 0
        head += data
    return int(head.split(b" ", 2)[1])


def stalled_body(path: str, headers: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Content-Length: 1000\r\n{headers}\r\n{{").encode()


# -- time -------------------------------------------------------------------------------------------------------

async def test_stalled_requests_are_closed_within_the_request_timeout(nursery: trio.Nursery) -> None:
    node = await start_node(nursery, ALL_ROLES, node_request_timeout=str(REQUEST_TIMEOUT))
    gatekeeper, core, polling = node.url("gatekeeper"), node.url("core"), node.url("push-polling")
    clients: list[tuple[str, bytes]] = (
        [(gatekeeper, stalled_body("/v1/session"))] * 15  # the body never completes
        + [(core, stalled_body("/v1/shows"))] * 15  # 401 answered before the body was read
        + [(core, stalled_body("/v1/shows", f"Authorization: {DIRECTOR['Authorization']}\r\n"))] * 5
        + [(polling, stalled_body("/v1/poll"))] * 5  # 405 before the body
        + [(core, b"GET /healthz HTTP/1.1\r\nHost: te")] * 5  # the head never completes
        + [(core, b"")] * 5  # connects and says nothing
    )
    assert len(clients) == 50
    answers: list[bytes] = []

    async def stall(url: str, request: bytes) -> None:
        stream = await connect(url)
        await stream.send_all(request)
        answers.append(await read_to_end(stream))
        await stream.aclose()

    with trio.fail_after(CLOSE_BOUND):
        async with trio.open_nursery() as stalls:
            for url, request in clients:
                stalls.start_soon(stall, url, request)
    assert len(answers) == 50  # every one of them closed by the server
    assert sum(a.startswith(b"HTTP/1.1 401") for a in answers) == 15
    with trio.fail_after(CLOSE_BOUND):  # and a newcomer is served
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.post(f"{gatekeeper}/v1/session", json={})).status_code == 200
            assert (await http.get(f"{core}/healthz")).status_code == 200


async def test_a_refused_oversized_body_closes_the_keep_alive_connection(nursery: trio.Nursery) -> None:
    # A long request timeout: the connection must close because of the refusal, not the timeout.
    node = await start_node(nursery, ALL_ROLES, node_request_timeout="600")
    ticket, _ = node.ctx.tickets.issue("u_big", ttl=600)
    cases = [
        (node.url("core"), "/v1/shows/s_x/episodes", DIRECTOR["Authorization"], 2_000_000, 400),
        (node.url("core"), "/v1/interactions/i_x/answers", f"Bearer {ticket}", 20_000, 400),
        (node.url("gatekeeper"), "/v1/session", "", 200_000, 413),  # refused by Quart's limit
    ]
    for url, path, authorization, length, status in cases:
        auth = f"Authorization: {authorization}\r\n" if authorization else ""
        stream = await connect(url)
        await stream.send_all(f"POST {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Type: application/json\r\n"
                              f"Content-Length: {length}\r\n\r\n".encode())
        with trio.fail_after(CLOSE_BOUND):
            answer = await read_to_end(stream)
        assert answer.startswith(f"HTTP/1.1 {status}".encode()), answer[:200]
        assert b'"code":"bad_request"' in answer


# -- caps --------------------------------------------------------------------------------------------------------

async def wait_refused(url: str, source: str) -> None:
    """A connection from ``source`` is closed without an answer."""
    stream = await connect(url, source)
    with trio.fail_after(CLOSE_BOUND):
        assert await status_of(stream) == 0
    await stream.aclose()


async def test_a_client_address_holds_at_most_its_cap(nursery: trio.Nursery) -> None:
    node = await start_node(nursery, ALL_ROLES, node_max_connections_per_address="4", node_request_timeout="600",
                            push_handshake_timeout="600")
    core, ws = node.url("core"), node.url("push")
    ws_http = "http" + ws.removeprefix("ws").removesuffix("/v1/ws")
    with trio.fail_after(CLOSE_BOUND):
        held = [await connect(core) for _ in range(4)] + [await connect(ws_http) for _ in range(4)]
        await wait_refused(core, "127.0.0.1")
        await wait_refused(ws_http, "127.0.0.1")
        # Another address still gets in, on both listeners.
        other = await connect(core, "127.0.0.2")
        assert await status_of(other) == 200
        ticket, _ = node.ctx.tickets.issue("u_other", ttl=600)
        other_ws = await connect(ws_http, "127.0.0.2")
        assert await status_of(other_ws, f"/v1/ws?ticket={ticket}") >= 400  # answered (a plain GET is no upgrade)
        # The first address's connections are all served; when one closes, its place is free again.
        assert await status_of(held[0]) == 200
        await held[1].aclose()
        while True:  # until the server has seen the close
            again = await connect(core)
            if await status_of(again) == 200:
                break
            await again.aclose()
            await trio.sleep(0.05)
        async with httpx.AsyncClient(timeout=10) as http:
            metrics = (await http.get(f"{node.url('gatekeeper')}/metrics")).text
    assert re.search(r'playtotv_connections_refused_total\{reason="address_full",role="core"\} [1-9]', metrics)
    assert re.search(r'playtotv_connections_refused_total\{reason="address_full",role="push"\} [1-9]', metrics)


async def test_a_full_listener_refuses_and_the_others_still_answer(nursery: trio.Nursery) -> None:
    node = await start_node(nursery, ALL_ROLES, node_max_connections="5", node_request_timeout="600")
    core = node.url("core")
    with trio.fail_after(CLOSE_BOUND):
        held = [await connect(core, f"127.0.0.{i}") for i in range(1, 6)]
        await wait_refused(core, "127.0.0.9")  # full, whoever asks
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.post(f"{node.url('gatekeeper')}/v1/session", json={})).status_code == 200
        assert all([await status_of(stream) == 200 for stream in held])


# -- running out of descriptors ------------------------------------------------------------------------------------

class FailingListener(trio.abc.Listener[trio.SocketStream]):
    """accept() fails with EMFILE ``failures`` times, then hands out ``stream``."""

    def __init__(self, failures: int, stream: trio.SocketStream) -> None:
        self.failures = failures
        self.stream: trio.SocketStream | None = stream

    async def accept(self) -> trio.SocketStream:
        await trio.lowlevel.checkpoint()
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        if self.stream is None:
            await trio.sleep_forever()
        stream, self.stream = self.stream, None
        return stream

    async def aclose(self) -> None:
        pass


async def test_accept_failures_are_logged_once_per_interval(autojump_clock: trio.testing.MockClock,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="playtotv.accept")
    left, right = trio.socket.socketpair()
    listener = FailingListener(1000, trio.SocketStream(left))  # 100 s of failures, 0.1 s apart
    served = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        served.set()

    errors: list[int] = []
    gate = ConnectionGate("test", ConnectionLimits(), on_accept_error=lambda: errors.append(1))
    with trio.fail_after(200):
        async with trio.open_nursery() as handlers:
            await handlers.start(partial(serve_tcp, handler, [listener], gate, handler_nursery=handlers))
            await served.wait()  # it kept trying, and serves the connection that finally came
            handlers.cancel_scope.cancel()
    right.close()
    records = [r for r in caplog.records if r.name == "playtotv.accept"]
    assert len(errors) == 1000
    assert 1 < len(records) <= 100 / LOG_INTERVAL + 1
    assert all("EMFILE" in r.getMessage() and r.exc_info is None for r in records)
    assert 900 <= sum(r.fields["failures"] for r in records) <= 1000  # type: ignore[attr-defined]


@pytest.mark.slow
async def test_a_node_out_of_descriptors_logs_once_per_interval_and_recovers(nursery: trio.Nursery, tmp_path) -> None:
    log_path = tmp_path / "node.log"
    env = {f"PLAYTOTV_{k.upper()}": v for k, v in DEFAULTS.items()} | {
        "PLAYTOTV_NODE_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
        "PLAYTOTV_PUSH_HANDSHAKE_TIMEOUT": str(REQUEST_TIMEOUT),
        "PLAYTOTV_NODE_MAX_CONNECTIONS": "100000",  # no cap: let the descriptors run out
    }
    node = await NodeProcess("all", env=env, log_path=str(log_path)).start(nursery)
    core = node.listening["core"]
    ws_http = "http" + node.listening["push"].removeprefix("ws").removesuffix("/v1/ws")
    in_use = len(os.listdir(f"/proc/{node.pid}/fd"))
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.prlimit(node.pid, resource.RLIMIT_NOFILE, (in_use + 20, hard))
    started = trio.current_time()

    async def hold(url: str) -> None:
        stream = await connect(url)
        await read_to_end(stream)  # until the server's timeout closes it
        await stream.aclose()

    with trio.fail_after(120):
        async with trio.open_nursery() as flood:
            for url in [core] * 60 + [ws_http] * 60:  # six times what the node can accept at once
                flood.start_soon(hold, url)
        elapsed = trio.current_time() - started
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(f"{core}/healthz")).status_code == 200
            ticket = (await http.post(f"{node.listening['gatekeeper']}/v1/session", json={})).json()["ticket"]
        stream = await connect(ws_http)
        assert await status_of(stream, f"/v1/ws?ticket={ticket}") >= 400  # the WebSocket listener answers too
    log = log_path.read_text()
    failures = [line for line in log.splitlines() if "EMFILE" in line]
    print(f"{len(failures)} lines about EMFILE in {elapsed:.1f} s", *failures[:4], sep="\n", file=sys.stderr)
    assert failures, "the flood did exhaust the descriptors"
    listeners = 2
    assert len(failures) <= listeners * (elapsed / LOG_INTERVAL + 2)
    assert "Traceback" not in log
