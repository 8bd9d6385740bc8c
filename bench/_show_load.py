"""Load generator for ``bench show``: viewers' WebSockets, every message they receive timed by type.

    python -m bench._show_load --channel episode:<id>

The ``bench/_overload_load.py`` generator (raw sockets, one ``epoll`` loop, a sans-io ``PushClient`` per
client) with a different record: each message any client receives, on the episode channel or on its own
``user:<id>`` channel (every client is subscribed to it without asking), is kept as
``[receipt time, sent_at]`` under its ``data.type``, so the driver can give each broadcast its delivery
latency and each ``score.updated`` its delay from the reveal.

Commands on stdin, one a line: ``connect <ws-url> <ticket> <user-id>``, ``report`` (one JSON line: the messages
received since the last report by type, and the client counts), ``stop``.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from typing import Any
from urllib.parse import urlsplit

import msgspec

from bench._fanout_load import OPCODE_TEXT, Client, client_frame, open_client, raise_fd_limit, say
from bench._overload_load import Generator
from playtotv.pushclient import MessageReceived, ReconnectRequested, Resubscribe, Subscribed

_decode = msgspec.json.Decoder(dict[str, Any]).decode


def interaction_of(data: dict[str, Any]) -> str:
    """The interaction a message is about: a late ``interaction.closed`` of one quiz must not pass for
    the next poll's."""
    inner = data.get("interaction")
    return str(inner.get("id", "") if isinstance(inner, dict) else data.get("interaction_id", ""))


class ShowGenerator(Generator):
    def __init__(self, channel: str, timed: set[str]) -> None:
        super().__init__(channel)
        self.timed = timed
        self.others: dict[str, int] = defaultdict(int)
        self.messages: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.users: dict[str, str] = {}  # ticket -> user id, until its client starts

    def command(self, line: str) -> None:
        parts = line.split()
        if len(parts) == 4 and parts[0] == "connect":  # with the user id: its user channel is followed too
            self.users[parts[2]] = parts[3]
            parts = parts[:3]
        super().command(" ".join(parts))

    def _start(self, url: str, ticket: str) -> None:
        client = open_client(self.epoll, urlsplit(url), ticket, user_id=self.users.pop(ticket, ""))
        if client is None:
            self.counts["failed"] += 1
            return
        self.by_fd[client.sock.fileno()] = client
        self.in_flight += 1

    def report(self) -> None:
        timed = {k: [(round(r, 4), round(s, 4)) for r, s in v] for k, v in self.messages.items()}
        say(event="report", messages=timed, others=self.others, busy_s=round(self.busy, 3),
            connecting=self.in_flight + len(self.waiting), **self.counts)
        self.messages = defaultdict(list)
        self.others = defaultdict(int)
        self.busy = 0.0

    def _text(self, client: Client, payload: bytes, now: float) -> None:
        for event in client.protocol.receive(payload):
            if isinstance(event, MessageReceived):
                try:
                    data = _decode(event.data)
                except msgspec.DecodeError:
                    data = {}
                kind = str(data.get("type", "?"))
                if kind in self.timed:
                    self.messages[f"{kind}/{interaction_of(data)}"].append((now, event.sent_at))
                else:
                    self.others[kind] += 1
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._show_load")
    parser.add_argument("--channel", required=True)
    parser.add_argument("--timed", default="", help="comma-separated data types to time (the rest are counted)")
    args = parser.parse_args(argv)
    raise_fd_limit()
    ShowGenerator(args.channel, set(filter(None, args.timed.split(",")))).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
