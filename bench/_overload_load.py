"""Load generator for ``bench overload``: WebSocket clients added on command, latencies reported on command.

    python -m bench._overload_load --channel episode:bench

Like ``bench/_fanout_load.py`` (and built from its pieces): raw non-blocking sockets and one ``epoll``
loop, no task per client, each client's frames checked by a sans-io ``PushClient`` (gaps, duplicates).
Unlike it, the population is not fixed: the driver admits clients one by one, so it sends the URL and
ticket of each (from the gatekeeper, or signed by the driver for the ramp) and asks for the latencies
since the last report whenever it likes.

Commands on stdin, one a line:

    connect <ws-url> <ticket>   open a client, subscribe it to --channel (at most CONNECT_WINDOW
                                handshakes in flight; the rest wait their turn)
    report                      print one JSON line: latencies (ms, sent_at → recv) of --channel messages
                                since the last report, and the client counts
    stop (or end of input)      exit

``busy`` in a report is the share of the interval this process spent working rather than waiting in
epoll: near 1.0 the generator, not the server, would set the pace.
"""

from __future__ import annotations

import argparse
import errno
import os
import select
import socket
import sys
import time
from collections import deque
from urllib.parse import urlsplit

from bench._fanout_load import RECV_BYTES, WS_KEY, Client, client_frame, raise_fd_limit, say
from playtotv.pushclient import MessageReceived, ReconnectRequested, Resubscribe, Subscribed

#: Handshakes in flight at once: more would only queue in the server's accept backlog.
CONNECT_WINDOW = 64
OPCODE_TEXT, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG = 0x1, 0x8, 0x9, 0xA


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
    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.epoll = select.epoll()
        self.by_fd: dict[int, Client] = {}
        self.waiting: deque[tuple[str, str]] = deque()  # (url, ticket) not yet started
        self.in_flight = 0
        self.latencies: list[float] = []
        self.counts = {"ready": 0, "failed": 0, "closed": 0, "reconnect_requested": 0, "gaps": 0}
        self.busy = 0.0
        self.stdin_buffer = b""
        self.running = True

    # -- commands ----------------------------------------------------------------------------------------
    def command(self, line: str) -> None:
        parts = line.split()
        if not parts:
            return
        if parts[0] == "connect" and len(parts) == 3:
            self.waiting.append((parts[1], parts[2]))
        elif parts[0] == "report":
            self.report()
        elif parts[0] == "stop":
            self.running = False

    def report(self) -> None:
        say(event="report", latencies_ms=[round(x, 2) for x in self.latencies], busy_s=round(self.busy, 3),
            connecting=self.in_flight + len(self.waiting), **self.counts)
        self.latencies = []
        self.busy = 0.0

    # -- connecting --------------------------------------------------------------------------------------
    def start_waiting(self) -> None:
        while self.waiting and self.in_flight < CONNECT_WINDOW:
            url, ticket = self.waiting.popleft()
            self._start(url, ticket)

    def _start(self, url: str, ticket: str) -> None:
        parts = urlsplit(url)
        request = (
            f"GET {parts.path}?ticket={ticket} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if sock.connect_ex((parts.hostname or "127.0.0.1", parts.port or 80)) not in (0, errno.EINPROGRESS):
            sock.close()
            self.counts["failed"] += 1
            return
        self.by_fd[sock.fileno()] = Client(sock, request, user_id="")
        self.epoll.register(sock.fileno(), select.EPOLLOUT)
        self.in_flight += 1

    def _drop(self, fd: int, client: Client, outcome: str) -> None:
        if client.state not in ("ready", "closed"):
            self.in_flight -= 1
        self.counts[outcome] += 1
        if client.state == "ready":
            self.counts["ready"] -= 1
        client.state = "closed"
        self.epoll.unregister(fd)
        client.sock.close()
        del self.by_fd[fd]

    # -- socket events -----------------------------------------------------------------------------------
    def on_event(self, fd: int, client: Client, now: float) -> None:
        try:
            if client.state == "connecting":
                if client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    self._drop(fd, client, "failed")
                    return
                client.sock.sendall(client.request)  # ~400 bytes: fits any fresh send buffer
                client.state = "upgrading"
                self.epoll.modify(fd, select.EPOLLIN)
                return
            data = client.sock.recv(RECV_BYTES)
        except OSError:
            self._drop(fd, client, "failed" if client.state != "ready" else "closed")
            return
        if not data:
            self._drop(fd, client, "failed" if client.state != "ready" else "closed")
            return
        client.buffer += data
        if client.state == "upgrading":
            end = client.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not client.buffer.startswith(b"HTTP/1.1 101"):
                self._drop(fd, client, "failed")
                return
            del client.buffer[: end + 4]
            frames = client.protocol.connection_made() + [client.protocol.subscribe(self.channel)]
            client.sock.sendall(b"".join(client_frame(OPCODE_TEXT, f) for f in frames))
            client.state = "subscribing"
        for opcode, payload in split_frames(client.buffer):
            if opcode == OPCODE_TEXT:
                self._text(client, payload, now)
            elif opcode == OPCODE_PING:  # keepalive: answer, or the server closes us as idle
                client.sock.send(client_frame(OPCODE_PONG, payload))
            elif opcode == OPCODE_CLOSE:
                self._drop(fd, client, "closed")
                return

    def _text(self, client: Client, payload: bytes, now: float) -> None:
        for event in client.protocol.receive(payload):
            if isinstance(event, MessageReceived):
                if event.channel == self.channel:
                    self.latencies.append((now - event.sent_at) * 1000.0)
            elif isinstance(event, Subscribed):
                if event.channel == self.channel and client.state == "subscribing":
                    client.state = "ready"
                    self.counts["ready"] += 1
                    self.in_flight -= 1
            elif isinstance(event, Resubscribe):
                self.counts["gaps"] += 1
                client.sock.send(client_frame(OPCODE_TEXT, event.frame))
            elif isinstance(event, ReconnectRequested):
                self.counts["reconnect_requested"] += 1

    # -- the loop ----------------------------------------------------------------------------------------
    def run(self) -> None:
        stdin = sys.stdin.fileno()
        self.epoll.register(stdin, select.EPOLLIN)
        while self.running:
            self.start_waiting()
            events = self.epoll.poll(0.5)
            started = time.perf_counter()
            now = time.time()
            for fd, _ in events:
                if fd == stdin:
                    self._read_commands(stdin)
                    continue
                client = self.by_fd.get(fd)
                if client is not None:
                    self.on_event(fd, client, now)
            self.busy += time.perf_counter() - started

    def _read_commands(self, stdin: int) -> None:
        chunk = os.read(stdin, 1 << 16)
        if not chunk:
            self.running = False
            return
        self.stdin_buffer += chunk
        *lines, self.stdin_buffer = self.stdin_buffer.split(b"\n")
        for line in lines:
            self.command(line.decode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._overload_load")
    parser.add_argument("--channel", default="episode:bench")
    args = parser.parse_args(argv)
    raise_fd_limit()
    Generator(args.channel).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
