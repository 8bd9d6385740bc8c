"""One client cannot fill a push node: its connections (WebSockets and long polls) are capped per user,
and the node reports distinct users, however many connections each holds, as its sessions — what the
gatekeeper counts against capacity."""

from __future__ import annotations

from functools import partial

import httpx
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionRejected, open_websocket_url

from playtotv.roles.push.users import UserSlots
from tests.pushkit import client, push_node, recv

BOUND = 10.0


def test_user_slots_count_users_once_and_cap_each():
    slots = UserSlots(per_user=2)
    assert slots.acquire("ann") and slots.acquire("ann") and not slots.acquire("ann")
    assert slots.acquire("bob") and len(slots) == 2 and slots.connections == 3
    slots.release("ann")
    assert slots.acquire("ann") and not slots.acquire("ann")
    for _ in range(2):
        slots.release("ann")
    slots.release("bob")
    assert len(slots) == 0 and slots.connections == 0
    slots.release("nobody")  # releasing what is not held changes nothing
    assert len(slots) == 0


async def test_one_ticket_with_many_websockets_is_one_session_and_is_capped() -> None:
    with trio.fail_after(BOUND):
        async with push_node(push_max_connections_per_user="3") as node:
            url = node.ws_url("greedy")
            async with client(node, "greedy"), client(node, "greedy"), client(node, "greedy"), \
                    client(node, "modest"):
                with pytest.raises(ConnectionRejected) as rejected:
                    async with open_websocket_url(url):
                        pass
                assert rejected.value.status_code == 429
                assert b"rate_limited" in rejected.value.body and b"connections for this user" in rejected.value.body
                node.runtime.report()
                assert node.ctx.load["sessions"] == 2  # two users, whatever their connections
                assert node.ctx.load["connections"] == 4
                # a long poll is a connection too: the capped user cannot add one
                async with httpx.AsyncClient() as http:
                    r = await http.get(node.poll_url(), params={"ticket": node.ticket("greedy"),
                                                                "channel": "episode:E1", "timeout": 0})
                    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
                    assert int(r.headers["Retry-After"]) >= 1
            # all closed: the user may connect again
            while len(node.runtime.server.users):
                await trio.testing.wait_all_tasks_blocked()
            async with client(node, "greedy") as ws:
                await ws.send_message('{"type":"ping"}')
                assert (await recv(ws))["type"] == "pong"


async def test_waiting_long_polls_count_per_user_and_are_capped() -> None:
    with trio.fail_after(BOUND):
        async with push_node(push_max_connections_per_user="2") as node, httpx.AsyncClient() as http:
            epoch, offset = await node.broker.position("episode:E1")
            params = {"ticket": node.ticket("poller"), "channel": "episode:E1", "epoch": epoch,
                      "offset": offset, "timeout": 30}
            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    nursery.start_soon(partial(http.get, node.poll_url(), params=params))
                while node.runtime.polls.active < 2:
                    await trio.testing.wait_all_tasks_blocked()
                r = await http.get(node.poll_url(), params={**params, "timeout": 0})
                assert r.status_code == 429
                node.runtime.report()
                assert node.ctx.load["sessions"] == 1
                nursery.cancel_scope.cancel()
