"""The fan-out hub against a broker that loses messages or connections (docs/reliability.md #7), the broker
subscription following local subscribers, and the accept loop surviving EMFILE (docs/reliability.md #6)."""

from __future__ import annotations

import errno
from contextlib import asynccontextmanager
from typing import AsyncIterator, Sequence

import httpx
import pytest
import trio
import trio.testing

from playtotv.broker.base import BrokerUnavailable, ChannelMessage, SubscriptionReset
from playtotv.broker.memory import MemoryBroker
from tests.pushkit import client, push_node, recv, subscribe

BOUND = 10.0


def data(n: int) -> dict:
    return {"type": "director.event", "event_type": "n", "data": {"n": n}}


class LossySubscription:
    """Passes on what the real subscription yields, except the messages the test says to lose, and can
    be told to yield a SubscriptionReset (what a broker does after its connection came back)."""

    def __init__(self, inner, broker: "LossyBroker") -> None:
        self.inner = inner
        self.broker = broker

    async def add(self, channels: Sequence[str]) -> None:
        self.broker.added.extend(channels)
        await self.inner.add(channels)

    async def remove(self, channels: Sequence[str]) -> None:
        self.broker.removed.extend(channels)
        await self.inner.remove(channels)

    def __aiter__(self):
        return self

    async def __anext__(self):
        while True:
            if self.broker.reset_pending:
                self.broker.reset_pending = False
                return SubscriptionReset(channels=[])
            item = await self.inner.__anext__()
            if isinstance(item, ChannelMessage) and item.offset in self.broker.lose:
                continue
            return item


class LossyBroker(MemoryBroker):
    def __init__(self) -> None:
        super().__init__()
        self.history_down = False
        self.lose: set[int] = set()
        self.reset_pending = False
        self.added: list[str] = []
        self.removed: list[str] = []

    @asynccontextmanager
    async def _lossy(self, channels: Sequence[str]) -> AsyncIterator[LossySubscription]:
        async with MemoryBroker.subscribe(self, channels) as inner:
            yield LossySubscription(inner, self)

    def subscribe(self, channels: Sequence[str] = ()):  # type: ignore[override]
        return self._lossy(channels)

    async def history(self, channel: str, since: int = 0, limit: int = 300):  # type: ignore[override]
        if self.history_down:
            raise BrokerUnavailable("history is down (test)")
        return await super().history(channel, since, limit)


async def test_a_gap_in_the_subscription_is_detected_by_offset_and_filled_from_history() -> None:
    broker = LossyBroker()
    broker.lose = {2, 3, 6}
    with trio.fail_after(BOUND):
        async with push_node(broker) as node, client(node) as ws:
            await subscribe(ws, "episode:E1")
            for i in range(8):
                await node.publish("episode:E1", data(i))
            received = [await recv(ws) for _ in range(8)]
            assert [m["offset"] for m in received] == list(range(1, 9))
            assert [m["data"] for m in received] == [data(i) for i in range(8)]


async def test_a_subscription_reset_makes_the_hub_fill_what_was_published_meanwhile() -> None:
    broker = LossyBroker()
    with trio.fail_after(BOUND):
        async with push_node(broker) as node, client(node) as ws:
            await subscribe(ws, "episode:E1")
            await node.publish("episode:E1", data(0))
            assert (await recv(ws))["offset"] == 1
            broker.lose = {2, 3}  # published while "the connection was down"
            for i in (1, 2):
                await node.publish("episode:E1", data(i))
            broker.reset_pending = True
            await node.publish("user:u1", data(99))  # something to wake the iteration: then the reset
            seen = [await recv(ws) for _ in range(3)]
            assert sorted((m["channel"], m["offset"]) for m in seen) == [
                ("episode:E1", 2), ("episode:E1", 3), ("user:u1", 1)]


async def test_a_broker_failure_during_recovery_is_an_error_not_a_crash() -> None:
    broker = LossyBroker()
    with trio.fail_after(BOUND):
        async with push_node(broker, push_channel_linger="0") as node:
            for i in range(5):
                await node.publish("episode:E1", data(i))
            epoch, _ = await broker.position("episode:E1")
            broker.history_down = True
            async with client(node) as ws:
                await ws.send_message(
                    '{"type":"subscribe","channel":"episode:E1","since":{"epoch":"%s","offset":1}}' % epoch)
                error = await recv(ws)
                assert error["type"] == "error" and error["code"] == "unavailable"
                async with httpx.AsyncClient() as http:
                    r = await http.get(node.poll_url(), params={"ticket": node.ticket("u1"), "channel": "episode:E1",
                                                                "epoch": epoch, "offset": "1"})
                assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
                broker.history_down = False
                reply = await subscribe(ws, "episode:E1", {"epoch": epoch, "offset": 1})
                assert [m["offset"] for m in reply["missed"]] == [2, 3, 4, 5]


async def test_the_broker_subscription_follows_local_subscribers() -> None:
    broker = LossyBroker()
    with trio.fail_after(BOUND):
        async with push_node(broker, push_channel_linger="0") as node:
            async with client(node, "a") as a, client(node, "b") as b:
                await subscribe(a, "episode:E1")
                await subscribe(b, "episode:E1")
                assert broker.added.count("episode:E1") == 1  # once, for the first local subscriber
                await a.send_message('{"type":"unsubscribe","channel":"episode:E1"}')
                await a.send_message('{"type":"ping"}')
                await recv(a)  # the unsubscribe was handled
                await trio.testing.wait_all_tasks_blocked()
                assert "episode:E1" not in broker.removed  # b still follows it
            while "episode:E1" not in broker.removed:  # the last one left: released
                await trio.testing.wait_all_tasks_blocked()
            assert node.hub.channels == {}
            assert sorted(broker.removed) == ["episode:E1", "user:a", "user:b"]


async def test_the_accept_loop_survives_emfile(monkeypatch) -> None:
    # accept() fails the way it does without file descriptors left, twice, then works again.
    failures = 0
    real_accept = trio.SocketListener.accept

    async def failing_accept(self: trio.SocketListener) -> trio.SocketStream:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise OSError(errno.EMFILE, "Too many open files")
        return await real_accept(self)

    monkeypatch.setattr(trio.SocketListener, "accept", failing_accept)
    with trio.fail_after(BOUND):
        async with push_node() as node:
            async with client(node) as ws:  # served after the failures and their 100 ms back-offs
                await ws.send_message('{"type":"ping"}')
                assert (await recv(ws))["type"] == "pong"
    assert failures == 2


class _Clock:
    """A fake wall clock that every write moves on by ``per_write`` seconds."""

    def __init__(self, per_write: float) -> None:
        self.now = 1000.0
        self.per_write = per_write

    def time(self) -> float:
        return self.now


class _TimedSubscriber:
    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self.frames: list[bytes] = []

    def send_raw(self, ws_frame: bytes) -> None:
        self.frames.append(ws_frame)
        self.clock.now += self.clock.per_write

    def send_json(self, payload: bytes) -> None:
        self.send_raw(payload)


def test_the_fanout_p99_is_a_p99_of_deliveries_sampled_along_the_pass(monkeypatch) -> None:
    """One sample per message made the node's p99 the time to its *last* client; a pass over 100 clients
    that takes 10 ms a write is now sampled at 20 points, so its p50 is the middle client's delay."""
    from playtotv.roles.push import hub as hub_module

    clock = _Clock(per_write=0.010)
    monkeypatch.setattr(hub_module.time, "time", clock.time)
    hub = hub_module.Hub(MemoryBroker(), recovery_limit=100)
    subscribers = tuple(_TimedSubscriber(clock) for _ in range(100))
    hub._send_timed(subscribers, b"frame", sent_at=clock.now)
    assert all(s.frames == [b"frame"] for s in subscribers)
    window = hub.fanout_delays
    assert len(window._samples) == hub_module.FANOUT_SAMPLES
    assert window.percentile(clock.now, 1.0) == pytest.approx(1.0)  # the last client: 100 writes
    assert window.percentile(clock.now, 0.5) == pytest.approx(0.5)
    assert window.percentile(clock.now, 0.05) == pytest.approx(0.05)  # after the first slice of 5


def test_a_fanout_to_few_subscribers_takes_one_sample_each(monkeypatch) -> None:
    from playtotv.roles.push import hub as hub_module

    clock = _Clock(per_write=0.001)
    monkeypatch.setattr(hub_module.time, "time", clock.time)
    hub = hub_module.Hub(MemoryBroker(), recovery_limit=100)
    subscribers = tuple(_TimedSubscriber(clock) for _ in range(3))
    hub._send_timed(subscribers, b"frame", sent_at=clock.now - 0.5)
    assert sorted(v for _, v in hub.fanout_delays._samples) == pytest.approx([0.501, 0.502, 0.503])
