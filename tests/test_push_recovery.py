"""Sans-io pieces of the push role: recovery verdicts, the recent-frames ring, server frames, the outbox
(on a socketpair: the kernel is the only I/O)."""

from __future__ import annotations

import socket

import trio
from wsproto.frame_protocol import FrameProtocol, Opcode

from playtotv.roles.push import wsframe
from playtotv.roles.push.access import may_follow
from playtotv.roles.push.outbox import Outbox
from playtotv.roles.push.recovery import UP_TO_DATE, Lost, Missing, RecentFrames, assess


def test_assess() -> None:
    assert assess("e", 5, "e", 5, limit=300) == UP_TO_DATE
    assert assess("e", 2, "e", 5, limit=300) == Missing(3, 5)
    assert assess("e", 0, "e", 300, limit=300) == Missing(1, 300)
    assert isinstance(assess("e", 0, "e", 301, limit=300), Lost)  # beyond the cap
    assert isinstance(assess("e", 6, "e", 5, limit=300), Lost)  # ahead
    assert isinstance(assess("old", 5, "e", 5, limit=300), Lost)  # another epoch


def test_recent_frames_ring() -> None:
    ring = RecentFrames(3)
    assert not ring.covers(1, 1)
    for offset in range(1, 6):
        ring.append(offset, b"%d" % offset)
    assert (ring.first, ring.last, len(ring)) == (3, 5, 3)
    assert ring.covers(3, 5) and not ring.covers(2, 5)
    assert ring.slice(4, 5) == [b"4", b"5"]
    ring.append(9, b"9")  # out of order: start over rather than serve a silent gap
    assert (ring.first, ring.last) == (9, 9)


def test_server_frames_parse_as_websocket_frames() -> None:
    client = FrameProtocol(client=True, extensions=[])
    for payload in (b"x", b"y" * 200, b"z" * 70000):
        client.receive_bytes(wsframe.text(payload))
        [frame] = list(client.received_frames())
        assert frame.opcode is Opcode.TEXT and frame.payload == payload.decode()
    client.receive_bytes(wsframe.close(1001, "bye"))
    [close] = list(client.received_frames())
    assert close.opcode is Opcode.CLOSE and close.payload == (1001, "bye")


def test_access_rules() -> None:
    assert may_follow("u1", "user:u1") and may_follow("u1", "episode:E1")
    assert not may_follow("u1", "user:u2") and not may_follow("u1", "admin:x") and not may_follow("u1", "episode:")


async def test_outbox_writes_at_once_buffers_the_rest_and_refuses_past_its_limit() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    try:
        outbox = Outbox(a.fileno(), limit=100_000)
        assert outbox.write(b"hello") and outbox.empty
        assert b.recv(100) == b"hello"
        chunk = b"x" * 50_000
        accepted = 0
        while outbox.write(chunk):  # the peer reads nothing: the queue grows until refused
            accepted += 1
        assert accepted >= 1 and outbox.queued_bytes <= 100_000 and not outbox.broken
        outbox.truncate_to_partial_frame()
        assert outbox.queued_bytes < len(chunk)
        assert outbox.write(b"bye", force=True)
        received = bytearray()
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(outbox.flush)
                while not received.endswith(b"bye"):
                    await trio.lowlevel.wait_readable(b)
                    received += b.recv(1 << 20)
        assert outbox.empty
        b.close()
        assert not outbox.write(b"x") and outbox.broken  # EPIPE: the peer is gone
    finally:
        a.close()
