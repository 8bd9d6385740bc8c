"""Long polling (docs/api.md §5): same messages and offsets as the WebSocket, immediate answers when the
client is behind or lost, all waiting polls woken by one publish, bounded waits."""

from __future__ import annotations

import httpx
import msgspec
import trio
import trio.testing

from playtotv.pushclient import MessageReceived, PushClient
from tests.pushkit import client, push_node

BOUND = 10.0


def data(n: int) -> dict:
    return {"type": "director.event", "event_type": "n", "data": {"n": n}}


async def poll(http: httpx.AsyncClient, node, user: str = "u1", **params) -> httpx.Response:
    return await http.get(node.poll_url(), params={"ticket": node.ticket(user), **params})


async def test_a_first_poll_returns_the_position_at_once_and_a_behind_poll_returns_messages() -> None:
    with trio.fail_after(BOUND):
        async with push_node() as node, httpx.AsyncClient() as http:
            for i in range(3):
                await node.publish("episode:E1", data(i))
            first = (await poll(http, node, channel="episode:E1", timeout=30)).json()
            assert first["offset"] == 3 and first["recovered"] is True and first["messages"] == []
            behind = (await poll(http, node, channel="episode:E1", epoch=first["epoch"], offset=1, timeout=30)).json()
            assert [m["offset"] for m in behind["messages"]] == [2, 3]
            assert behind["messages"][0] == {"type": "message", "channel": "episode:E1", "epoch": first["epoch"],
                                              "offset": 2, "sent_at": behind["messages"][0]["sent_at"], "data": data(1)}


async def test_one_publish_wakes_every_waiting_poll_of_the_channel() -> None:
    with trio.fail_after(BOUND):
        async with push_node() as node, httpx.AsyncClient() as http:
            epoch, offset = await node.broker.position("episode:E1")
            answers: list[dict] = []

            async def wait_poll(user: str) -> None:
                r = await poll(http, node, user, channel="episode:E1", epoch=epoch, offset=offset, timeout=30)
                answers.append(r.json())

            async with trio.open_nursery() as nursery:
                for user in ("a", "b", "c"):
                    nursery.start_soon(wait_poll, user)
                while len(node.hub.channels.get("episode:E1").waiters if "episode:E1" in node.hub.channels else ()) < 3:
                    await trio.testing.wait_all_tasks_blocked()
                assert answers == []  # nothing to say yet: they wait
                await node.publish("episode:E1", data(1))
            assert [a["messages"][0]["data"] for a in answers] == [data(1)] * 3


async def test_a_quiet_poll_returns_empty_after_its_timeout() -> None:
    with trio.fail_after(BOUND):
        async with push_node() as node, httpx.AsyncClient() as http:
            epoch, offset = await node.broker.position("episode:E1")
            r = await poll(http, node, channel="episode:E1", epoch=epoch, offset=offset, timeout=0.2)
            assert r.status_code == 200
            assert r.json() == {"channel": "episode:E1", "epoch": epoch, "offset": offset, "recovered": True,
                                "messages": []}


async def test_positions_that_cannot_be_filled_return_recovered_false_at_once() -> None:
    with trio.fail_after(BOUND):
        async with push_node() as node, httpx.AsyncClient() as http:
            await node.publish("episode:E1", data(1))
            epoch, _ = await node.broker.position("episode:E1")
            for position in ({"epoch": "gone", "offset": 0}, {"epoch": epoch, "offset": "x"},
                             {"epoch": epoch, "offset": -1}, {"epoch": epoch, "offset": 7}, {"offset": 0}):
                r = await poll(http, node, channel="episode:E1", timeout=30, **position)
                assert r.status_code == 200, position
                assert r.json()["recovered"] is False and r.json()["offset"] == 1, position


async def test_repeated_channels_poll_several_at_once() -> None:
    with trio.fail_after(BOUND):
        async with push_node() as node, httpx.AsyncClient() as http:
            e1 = await node.publish("episode:E1", data(1))
            u1 = await node.publish("user:u1", data(2))
            params = [("ticket", node.ticket("u1")), ("channel", "episode:E1"), ("epoch", e1.epoch),
                      ("offset", "1"), ("channel", "user:u1"), ("epoch", u1.epoch), ("offset", "0"),
                      ("timeout", "30")]
            answers = (await http.get(node.poll_url(), params=params)).json()
            assert [(a["channel"], len(a["messages"])) for a in answers] == [("episode:E1", 0), ("user:u1", 1)]


async def test_polling_refuses_bad_tickets_foreign_channels_and_bad_requests() -> None:
    with trio.fail_after(BOUND):
        async with push_node() as node, httpx.AsyncClient() as http:
            r = await http.get(node.poll_url(), params={"ticket": "forged", "channel": "episode:E1"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            r = await poll(http, node, "ann", channel="user:bob")
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
            r = await poll(http, node, "ann")
            assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
            r = await poll(http, node, "ann", channel="episode:E1", timeout="soon")
            assert r.status_code == 400
            assert "user:bob" not in node.hub.channels


async def test_websocket_and_polling_clients_receive_identical_sequences() -> None:
    count = 30
    with trio.fail_after(BOUND * 2):
        async with push_node() as node, httpx.AsyncClient() as http, client(node, "ws") as ws:
            ws_state = PushClient(user_id="ws")
            await ws.send_message(ws_state.subscribe("episode:E1").decode())
            assert ws_state.receive(await ws.get_message())  # subscribed
            poll_state = PushClient(user_id="pl")
            poll_state.subscribe("episode:E1")
            poll_state.receive_poll((await http.get(node.poll_url(), params=[
                ("ticket", node.ticket("pl")), *poll_state.poll_params()])).content)

            ws_seen: list[MessageReceived] = []
            poll_seen: list[MessageReceived] = []

            async def read_ws() -> None:
                while len(ws_seen) < count:
                    ws_seen.extend(e for e in ws_state.receive(await ws.get_message()) if isinstance(e, MessageReceived))

            async def read_polls() -> None:
                while len(poll_seen) < count:
                    r = await http.get(node.poll_url(), params=[("ticket", node.ticket("pl")), ("timeout", "30"),
                                                                *poll_state.poll_params()])
                    poll_seen.extend(e for e in poll_state.receive_poll(r.content) if isinstance(e, MessageReceived))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_ws)
                nursery.start_soon(read_polls)
                for i in range(count):
                    await node.publish("episode:E1", data(i))
                    if i % 7 == 0:
                        await trio.testing.wait_all_tasks_blocked()  # let some polls catch up in between
            assert [(m.offset, msgspec.json.decode(m.data)) for m in ws_seen] == \
                [(m.offset, msgspec.json.decode(m.data)) for m in poll_seen] == \
                [(i + 1, data(i)) for i in range(count)]
            assert ws_seen == poll_seen  # byte for byte, sent_at included


async def test_a_gatekeeper_queue_token_cannot_poll() -> None:
    with trio.fail_after(BOUND):
        async with push_node() as node, httpx.AsyncClient() as http:
            queue_token, _ = node.ctx.tickets.issue("q_refused", ttl=600, role="queue")
            r = await http.get(node.poll_url(), params={"ticket": queue_token, "channel": "episode:E1", "timeout": 0})
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            r = await http.get(node.poll_url(), params={"channel": "user:q_refused", "timeout": 0},
                               headers={"Authorization": f"Bearer {queue_token}"})
            assert r.status_code == 401
            assert node.hub.channels == {}
