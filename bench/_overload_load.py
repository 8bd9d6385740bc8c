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
import os
import select
import sys
import time
from collections import deque
from urllib.parse import urlsplit

from bench._fanout_load import (
    LOST,
    OPCODE_CLOSE,
    OPCODE_PING,
    OPCODE_PONG,
    OPCODE_TEXT,
    WAITING,
    Client,
    client_frame,
    open_client,
    raise_fd_limit,
    say,
    socket_event,
    split_frames,
)
from playtotv.pushclient import MessageReceived, ReconnectRequested, Resubscribe, Subscribed

#: Handshakes in flight at once: more would only queue in the server's accept backlog.
CONNECT_WINDOW = 64


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
        client = open_client(self.epoll, urlsplit(url), ticket, user_id="")
        if client is None:
            self.counts["failed"] += 1
            return
        self.by_fd[client.sock.fileno()] = client
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
        outcome = socket_event(client, fd, self.epoll, self.channel)
        if outcome == LOST:
            self._drop(fd, client, "failed" if client.state != "ready" else "closed")
            return
        if outcome == WAITING:
            return
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
