"""The sans-io push client (playtotv.pushclient): bytes in, events out, h11 style — no sockets."""

from __future__ import annotations

import msgspec
import pytest

from playtotv.protocol.push import encode_message_frame, encode_poll_response, encode_subscribed_frame
from playtotv.pushclient import (
    MessageReceived,
    PushClient,
    ReconnectRequested,
    RemoteProtocolError,
    Resubscribe,
    ServerError,
    StateLost,
    Subscribed,
)

CH = "episode:E1"


def msg(offset: int, epoch: str = "e1", channel: str = CH) -> bytes:
    return encode_message_frame(channel, epoch, offset, 1.0 + offset, b'{"n":%d}' % offset)


def subscribed(offset: int, epoch: str = "e1", recovered: bool = True, missed: list[bytes] | None = None,
               channel: str = CH) -> bytes:
    return encode_subscribed_frame(channel, epoch, offset, recovered, missed or [])


def offsets(events: list) -> list[int]:
    return [e.offset for e in events if isinstance(e, MessageReceived)]


def test_in_order_messages_are_delivered_once_and_duplicates_dropped() -> None:
    c = PushClient()
    sent = msgspec.json.decode(c.subscribe(CH))
    assert sent == {"type": "subscribe", "channel": CH, "since": None}
    assert c.receive(subscribed(4)) == [Subscribed(CH, "e1", 4)]
    assert offsets(c.receive(msg(5)) + c.receive(msg(6))) == [5, 6]
    assert c.receive(msg(6)) == [] and c.receive(msg(3)) == []
    assert c.duplicates == 2
    event = c.receive(msg(7))[0]
    assert event == MessageReceived(CH, "e1", 7, 8.0, b'{"n":7}')


def test_a_skipped_offset_asks_to_resubscribe_with_since_and_the_reply_fills_the_gap() -> None:
    c = PushClient()
    c.subscribe(CH)
    c.receive(subscribed(0))
    c.receive(msg(1))
    [gap] = c.receive(msg(3))
    assert isinstance(gap, Resubscribe) and (gap.since.epoch, gap.since.offset) == ("e1", 1)
    assert msgspec.json.decode(gap.frame)["since"] == {"epoch": "e1", "offset": 1}
    assert c.receive(msg(4)) == []  # held back: the reply replays it in order
    events = c.receive(subscribed(4, missed=[msg(2), msg(3), msg(4)]))
    assert offsets(events) == [2, 3, 4] and events[-1] == Subscribed(CH, "e1", 4)
    assert offsets(c.receive(msg(5))) == [5]


def test_an_epoch_change_in_a_message_is_a_gap_and_recovered_false_means_reload() -> None:
    c = PushClient()
    c.subscribe(CH)
    c.receive(subscribed(7))
    [gap] = c.receive(msg(1, epoch="e2"))
    assert isinstance(gap, Resubscribe)
    assert c.receive(subscribed(1, epoch="e2", recovered=False)) == [StateLost(CH, "e2", 1)]
    assert offsets(c.receive(msg(2, epoch="e2"))) == [2]


def test_after_a_reconnect_every_channel_is_resubscribed_with_its_position() -> None:
    c = PushClient(user_id="u1")
    assert c.connection_made() == []  # nothing known yet: the server subscribes the user channel itself
    assert c.receive(subscribed(3, channel="user:u1")) == [Subscribed("user:u1", "e1", 3)]
    c.subscribe(CH)
    c.receive(subscribed(10))
    c.receive(msg(11))
    frames = [msgspec.json.decode(f) for f in c.connection_made()]
    assert frames == [
        {"type": "subscribe", "channel": "user:u1", "since": {"epoch": "e1", "offset": 3}},
        {"type": "subscribe", "channel": CH, "since": {"epoch": "e1", "offset": 11}},
    ]
    # The server's unasked user-channel reply comes first, at its current position: not a gap, since our
    # own reply (with what was missed) follows; live messages in between are held back.
    assert c.receive(subscribed(5, channel="user:u1")) == []
    assert c.receive(msg(6, channel="user:u1")) == []
    events = c.receive(subscribed(6, channel="user:u1", missed=[msg(4, channel="user:u1"),
                                                                msg(5, channel="user:u1"),
                                                                msg(6, channel="user:u1")]))
    assert offsets(events) == [4, 5, 6]
    events = c.receive(subscribed(13, missed=[msg(12), msg(13)]))
    assert offsets(events) == [12, 13]


def test_a_reply_that_does_not_reach_the_servers_position_is_a_gap() -> None:
    c = PushClient()
    c.subscribe(CH)
    c.receive(subscribed(2))
    events = c.receive(subscribed(5, missed=[msg(3)]))
    assert offsets(events) == [3] and isinstance(events[-1], Resubscribe)


def test_control_frames_and_garbage() -> None:
    c = PushClient()
    assert c.receive(b'{"type":"reconnect","after":0.5}') == [ReconnectRequested(0.5)]
    assert c.receive(b'{"type":"error","code":"forbidden","message":"no"}') == [ServerError("forbidden", "no")]
    assert c.receive(b'{"type":"pong","server_time":5.0}')[0].server_time == 5.0
    assert c.receive(msg(1, channel="episode:other")) == []  # not followed
    for junk in (b"nope", b'{"type":"message"}', b'{"type":"surprise"}'):
        with pytest.raises(RemoteProtocolError):
            c.receive(junk)


def test_polling_uses_the_same_positions() -> None:
    c = PushClient()
    c.subscribe(CH)
    c.subscribe("user:u1")
    assert c.poll_params() == [("channel", CH), ("epoch", ""), ("offset", ""),
                               ("channel", "user:u1"), ("epoch", ""), ("offset", "")]
    body = b"[" + encode_poll_response(CH, "e1", 2, True, []) + b"," + \
        encode_poll_response("user:u1", "u", 0, True, []) + b"]"
    assert c.receive_poll(body) == [Subscribed(CH, "e1", 2), Subscribed("user:u1", "u", 0)]
    assert c.poll_params()[:3] == [("channel", CH), ("epoch", "e1"), ("offset", "2")]
    events = c.receive_poll(encode_poll_response(CH, "e1", 4, True, [msg(3), msg(4)]))
    assert offsets(events) == [3, 4]
    assert c.receive_poll(encode_poll_response(CH, "e1", 4, True, [msg(4)])) == []  # a duplicate
    assert c.duplicates == 1
    assert c.receive_poll(encode_poll_response(CH, "e9", 1, False, [])) == [StateLost(CH, "e9", 1)]
    with pytest.raises(RemoteProtocolError):
        c.receive_poll(b"<html>")
