"""The push role on Redis: the pub/sub connection dropping (docs/reliability.md #7), Redis restarting with its
memory lost (docs/reliability.md #16), and two push nodes sharing one Redis."""

from __future__ import annotations

import trio

from playtotv.broker import open_broker
from playtotv.devtools.localredis import query
from tests.pushkit import client, push_node, recv, subscribe
from tests.redis_server import RedisServer

#: A reconnect takes the broker's back-off (<= 2 s) plus a restart on a loaded machine.
BOUND = 20.0


def data(n: int) -> dict:
    return {"type": "director.event", "event_type": "n", "data": {"n": n}}


async def test_a_dropped_pubsub_connection_is_resubscribed_and_the_gap_filled(redis_server: RedisServer) -> None:
    with trio.fail_after(BOUND):
        async with open_broker(redis_server.url) as broker, push_node(broker) as node, client(node) as ws:
            await subscribe(ws, "episode:E1")
            for i in range(3):
                await node.publish("episode:E1", data(i))
            assert [(await recv(ws))["offset"] for _ in range(3)] == [1, 2, 3]
            killed = await query(redis_server.port, "CLIENT", "KILL", "TYPE", "pubsub")
            assert isinstance(killed, int) and killed > 0, killed
            for i in range(3, 10):  # published while the push node is not subscribed
                await node.publish("episode:E1", data(i))
            received = [await recv(ws) for _ in range(7)]
            assert [m["offset"] for m in received] == list(range(4, 11))
            assert [m["data"] for m in received] == [data(i) for i in range(3, 10)]


async def test_a_redis_restart_gives_clients_recovered_false_and_the_node_carries_on(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(BOUND):
        async with open_broker(redis_server.url) as broker, push_node(broker) as node, client(node) as ws:
            await subscribe(ws, "episode:E1")
            before = await node.publish("episode:E1", data(0))
            assert (await recv(ws))["offset"] == 1
            await trio.to_thread.run_sync(redis_server.restart)
            while True:  # the hub notices the reset, finds a new epoch and tells the client
                frame = await recv(ws)
                if frame["type"] == "subscribed" and frame["channel"] == "episode:E1":
                    break
            assert frame["recovered"] is False and frame["epoch"] != before.epoch and frame["missed"] == []
            after = await node.publish("episode:E1", data(1))
            message = await recv(ws)
            while message["channel"] != "episode:E1":  # the user channel was reset too
                message = await recv(ws)
            assert (message["epoch"], message["offset"], message["data"]) == (after.epoch, after.offset, data(1))
            reply = await subscribe(ws, "episode:E1", {"epoch": before.epoch, "offset": before.offset})
            assert reply["recovered"] is False  # a position from the lost epoch cannot be filled


async def test_two_push_nodes_on_one_redis_both_deliver_every_episode_message(redis_url: str) -> None:
    count = 20
    with trio.fail_after(BOUND):
        async with open_broker(redis_url) as broker_a, open_broker(redis_url) as broker_b, \
                open_broker(redis_url) as publisher, \
                push_node(broker_a) as node_a, push_node(broker_b) as node_b, \
                client(node_a, "ann") as ann, client(node_b, "bob") as bob:
            for ws in (ann, bob):
                await subscribe(ws, "episode:E1")
            for i in range(count):
                await publisher.publish("episode:E1", b'{"type":"director.event","event_type":"n","data":{"n":%d}}' % i)
            for ws in (ann, bob):
                received = [await recv(ws) for _ in range(count)]
                assert [m["offset"] for m in received] == list(range(1, count + 1))
                assert [m["data"]["data"]["n"] for m in received] == list(range(count))
            # Each node is subscribed only to what its own clients follow.
            assert set(node_a.hub.channels) == {"episode:E1", "user:ann"}
            assert set(node_b.hub.channels) == {"episode:E1", "user:bob"}
