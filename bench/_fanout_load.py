"""Load generator for ``bench fanout``: many WebSocket clients in one process, built to stay out of the way.

    python -m bench._fanout_load --url ws://127.0.0.1:8002/v1/ws [--url ...] --clients N --secret S
        --channel episode:bench --messages M [--prefix g0-]

No framework and no task per client: raw non-blocking sockets and one ``epoll`` loop. The handshake is
written by hand (a fixed request; the answer must be ``101``) and server frames are unwrapped by hand
(they are never masked or fragmented); what they carry goes through each client's sans-io
``PushClient``, so every client also checks that it got every message once and in order (a gap would
show up as ``gaps``, a repeat as ``duplicates``). Each client subscribes to ``--channel``; a receipt is
timed when ``recv`` returns, against the message's ``sent_at``.

Talks to the bench driver in JSON lines on stdout: ``{"event": "ready", ...}`` once every client is
subscribed (or failed), then ``{"event": "done", ...}`` with every latency once every client has
``--messages`` messages, or when stdin says ``stop`` (or closes); the clients stay connected until the
next line on stdin (or its end). ``busy_s`` / ``receive_window_s`` is the
fraction of the receive windows (first to last receipt of each message) this process spent working
rather than waiting in epoll: near 1.0 it would be the bottleneck, well below it the server is.
"""

from __future__ import annotations

import argparse
import base64
import errno
import os
import resource
import select
import socket
import sys
import time
from urllib.parse import SplitResult, urlsplit

import msgspec

from playtotv.credentials import KeyRing
from playtotv.pushclient import MessageReceived, PushClient, Resubscribe, Subscribed

#: Handshakes in flight at once: more would overflow the server's accept backlog and cost SYN retries.
CONNECT_WINDOW = 256
#: Give up on clients that are not subscribed after this long.
CONNECT_TIMEOUT = 120.0
RECV_BYTES = 65536
#: Any fixed key does for a load generator (RFC 6455 wants it random to protect proxies, not servers).
WS_KEY = base64.b64encode(b"bench-fanout-key").decode()
TICKET_TTL = 3600.0
OPCODE_TEXT, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG = 0x1, 0x8, 0x9, 0xA
#: What ``socket_event`` leaves its caller to do: drop the client, wait for more, or read its frames.
LOST, WAITING, OPEN = "lost", "waiting", "open"


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame with an all-zero mask (the payload goes as is)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    else:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    return header + b"\x00\x00\x00\x00" + payload


class Client:
    __slots__ = ("sock", "state", "buffer", "received", "request", "protocol")

    def __init__(self, sock: socket.socket, request: bytes, user_id: str) -> None:
        self.sock = sock
        self.state = "connecting"
        self.buffer = bytearray()
        self.received = 0
        self.request = request
        self.protocol = PushClient(user_id=user_id)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def say(**fields: object) -> None:
    sys.stdout.write(msgspec.json.encode(fields).decode() + "\n")
    sys.stdout.flush()


def upgrade_request(url: SplitResult, ticket: str) -> bytes:
    return (
        f"GET {url.path}?ticket={ticket} HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def open_client(epoll: select.epoll, url: SplitResult, ticket: str, user_id: str) -> Client | None:
    """A non-blocking connection to ``url``, registered for the moment it connects; None when connecting
    failed at once."""
    request = upgrade_request(url, ticket)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if sock.connect_ex((url.hostname or "127.0.0.1", url.port or 80)) not in (0, errno.EINPROGRESS):
        sock.close()
        return None
    epoll.register(sock.fileno(), select.EPOLLOUT)
    return Client(sock, request, user_id)


def socket_event(client: Client, fd: int, epoll: select.epoll, channel: str) -> str:
    """Advance ``client`` on one epoll event: once connected it sends the upgrade request; once the ``101``
    is in, its PushClient session opens, subscribed to ``channel``. LOST: the connection failed or ended
    (``client.state`` is left as it was, for the caller to count); WAITING: nothing to read yet; OPEN:
    ``client.buffer`` holds what arrived (complete frames or not)."""
    try:
        if client.state == "connecting":
            if client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                return LOST
            client.sock.sendall(client.request)  # a few hundred bytes: fits any fresh send buffer
            client.state = "upgrading"
            epoll.modify(fd, select.EPOLLIN)
            return WAITING
        data = client.sock.recv(RECV_BYTES)
    except OSError:
        return LOST
    if not data:
        return LOST
    client.buffer += data
    if client.state == "upgrading":
        end = client.buffer.find(b"\r\n\r\n")
        if end < 0:
            return WAITING
        if not client.buffer.startswith(b"HTTP/1.1 101"):
            return LOST
        del client.buffer[: end + 4]
        frames = client.protocol.connection_made() + [client.protocol.subscribe(channel)]
        client.sock.sendall(b"".join(client_frame(OPCODE_TEXT, f) for f in frames))
        client.state = "subscribing"
    return OPEN


def split_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Complete server frames (never masked or fragmented) taken off the front of ``buffer``."""
    frames = []
    pos, end = 0, len(buffer)
    while end - pos >= 2:
        opcode, length, start = buffer[pos] & 0x0F, buffer[pos + 1] & 0x7F, pos + 2
        if length == 126:
            if end - start < 2:
                break
            length, start = int.from_bytes(buffer[start:start + 2], "big"), start + 2
        elif length == 127:
            if end - start < 8:
                break
            length, start = int.from_bytes(buffer[start:start + 8], "big"), start + 8
        if end - start < length:
            break
        frames.append((opcode, bytes(buffer[start:start + length])))
        pos = start + length
    del buffer[:pos]
    return frames


class Generator:
    def __init__(self, urls: list[str], clients: int, secret: str, channel: str, messages: int, prefix: str):
        self.ring = KeyRing.from_secrets(secret)
        self.urls = [urlsplit(u) for u in urls]
        self.total = clients
        self.channel = channel
        self.messages = messages
        self.prefix = prefix
        self.epoll = select.epoll()
        self.by_fd: dict[int, Client] = {}
        self.latencies: list[float] = []
        self.ready = 0
        self.failed = 0
        self.done_clients = 0
        self.window_busy = 0.0
        self.stopped = False  # the driver said stop (or went away) before every message arrived
        self.gaps = 0
        #: Per message (by arrival rank on a client): first and last receipt in this process.
        self.by_message: list[list[float]] = [[] for _ in range(messages)]
        self.first_at = [0.0] * messages
        self.last_at = [0.0] * messages

    # -- connecting ------------------------------------------------------------------------------------------
    def _user(self, index: int) -> str:
        return f"{self.prefix}{index}"

    def _start(self, index: int) -> bool:
        token, _ = self.ring.issue(self._user(index), ttl=TICKET_TTL)
        client = open_client(self.epoll, self.urls[index % len(self.urls)], token, self._user(index))
        if client is None:
            self.failed += 1
            return False
        self.by_fd[client.sock.fileno()] = client
        return True

    def connect_all(self) -> None:
        started = 0
        in_flight = 0
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while (self.ready + self.failed) < self.total and time.monotonic() < deadline:
            while started < self.total and in_flight < CONNECT_WINDOW:
                in_flight += self._start(started)
                started += 1
            for fd, _ in self.epoll.poll(0.5):
                client = self.by_fd[fd]
                before = client.state
                self._handshake_step(fd, client)
                if before != "ready" and client.state in ("ready", "failed"):
                    in_flight -= 1
        for fd, client in list(self.by_fd.items()):
            if client.state != "ready":
                self._fail(fd, client)

    def _fail(self, fd: int, client: Client) -> None:
        if client.state == "failed":
            return
        client.state = "failed"
        self.failed += 1
        self.epoll.unregister(fd)
        client.sock.close()
        del self.by_fd[fd]

    def _handshake_step(self, fd: int, client: Client) -> None:
        outcome = socket_event(client, fd, self.epoll, self.channel)
        if outcome == LOST:
            self._fail(fd, client)
        elif outcome == OPEN:
            self._frames(client, time.time())

    # -- frames ------------------------------------------------------------------------------------------------
    def _frames(self, client: Client, now: float) -> None:
        for opcode, payload in split_frames(client.buffer):
            if opcode == OPCODE_TEXT:
                self._text(client, payload, now)
            elif opcode == OPCODE_PING:  # keepalive ping: answer, or the server closes us as idle
                client.sock.send(client_frame(OPCODE_PONG, payload))
            elif opcode == OPCODE_CLOSE:
                client.state = "closed"

    def _text(self, client: Client, payload: bytes, now: float) -> None:
        for event in client.protocol.receive(payload):
            if isinstance(event, MessageReceived):
                self._message(client, event, now)
            elif isinstance(event, Subscribed):
                if event.channel == self.channel and client.state == "subscribing":
                    client.state = "ready"
                    self.ready += 1
            elif isinstance(event, Resubscribe):
                self.gaps += 1
                client.sock.send(client_frame(OPCODE_TEXT, event.frame))

    def _message(self, client: Client, event: MessageReceived, now: float) -> None:
        k = client.received
        client.received += 1
        latency = (now - event.sent_at) * 1000.0
        self.latencies.append(latency)
        if k < self.messages:
            self.by_message[k].append(latency)
            if not self.first_at[k]:
                self.first_at[k] = now
            self.last_at[k] = now
        if client.received == self.messages:
            self.done_clients += 1

    # -- receiving ---------------------------------------------------------------------------------------------
    def receive_until_done(self) -> None:
        stdin = sys.stdin.fileno()
        self.epoll.register(stdin, select.EPOLLIN)
        busy = 0.0
        while self.done_clients < self.ready:
            events = self.epoll.poll(1.0)
            started = time.perf_counter()
            now = time.time()
            for fd, _ in events:
                if fd == stdin:
                    line = os.read(stdin, 64)
                    if not line or line.strip() == b"stop":
                        self.window_busy = busy
                        self.stopped = True
                        return
                    continue
                client = self.by_fd.get(fd)
                if client is None:
                    continue
                try:
                    data = client.sock.recv(RECV_BYTES)
                except OSError:
                    data = b""
                if not data:
                    self.epoll.unregister(fd)
                    del self.by_fd[fd]
                    continue
                client.buffer += data
                self._frames(client, now)
            if self.latencies:
                busy += time.perf_counter() - started
        self.window_busy = busy

    def receive_windows(self) -> float:
        """Seconds between the first and the last receipt of each message, added up."""
        return sum(last - first for first, last in zip(self.first_at, self.last_at) if first)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._fanout_load")
    parser.add_argument("--url", action="append", required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--channel", default="episode:bench")
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--prefix", default="c")
    args = parser.parse_args(argv)
    raise_fd_limit()
    gen = Generator(args.url, args.clients, args.secret, args.channel, args.messages, args.prefix)
    t0 = time.monotonic()
    gen.connect_all()
    say(event="ready", clients=gen.ready, failed=gen.failed, connect_s=round(time.monotonic() - t0, 3))
    cpu0 = time.process_time()
    gen.receive_until_done()
    window = gen.receive_windows()
    say(event="done", latencies_ms=[round(x, 3) for x in gen.latencies],
        max_by_message_ms=[round(max(m), 1) if m else None for m in gen.by_message], clients=gen.ready,
        complete=gen.done_clients, cpu_s=round(time.process_time() - cpu0, 3),
        busy_s=round(gen.window_busy, 3), receive_window_s=round(window, 3), gaps=gen.gaps,
        duplicates=sum(c.protocol.duplicates for c in gen.by_fd.values()))
    # Keep the connections until the driver has read the servers' own figures: a mass disconnect now
    # would be measured instead.
    if not gen.stopped:
        sys.stdin.readline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
