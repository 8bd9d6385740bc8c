"""The Python SDK against real processes: it survives the death of its core node (the answer lands
exactly once) and of its push node (reconnects elsewhere, nothing lost), and gets every message by long
polling when the WebSocket port is blocked (docs/reliability.md #3, #8, #10)."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import msgspec
import pytest
import trio

from playtotv import keys
from playtotv.credentials import KeyRing
from playtotv.broker import open_broker
from playtotv.client import ClientError, PlayToTVClient, message_data
from playtotv.pushclient import MessageReceived, StateLost
from tests.inprocess import start_node
from playtotv.store import open_store
from playtotv.devtools.nodeprocess import NodeProcess
from tests.pushkit import add_episode
from tests.redis_server import free_port

SECRET = "client-test-secret-0123456789"
DIRECTOR = {"Authorization": "Bearer director-key-0123456789"}


def cluster_env(redis_url: str, db, name: str) -> dict[str, str]:
    return {
        "PLAYTOTV_REDIS_URL": redis_url, "PLAYTOTV_STORE_URL": f"sqlite:///{db}",
        "PLAYTOTV_AUTH_SECRET": SECRET, "PLAYTOTV_AUTH_DIRECTOR_KEYS": "director-key-0123456789",
        "PLAYTOTV_NODE_ID": name, "PLAYTOTV_NODE_DRAIN_SECONDS": "2",
        "PLAYTOTV_GATEKEEPER_BIND": "127.0.0.1:0", "PLAYTOTV_CORE_BIND": "127.0.0.1:0",
        "PLAYTOTV_PUSH_BIND": "127.0.0.1:0", "PLAYTOTV_PUSH_POLLING_BIND": "127.0.0.1:0",
    }


async def open_quiz(core_url: str) -> tuple[str, str]:
    async with httpx.AsyncClient(base_url=core_url, headers=DIRECTOR, timeout=10) as http:
        show = (await http.post("/v1/shows", json={"title": "S"})).json()
        episode = (await http.post(f"/v1/shows/{show['id']}/episodes", json={"title": "E", "mode": "live"})).json()
        await http.post(f"/v1/episodes/{episode['id']}/start", json={})
        body = {"kind": "quiz", "prompt": "?", "options": [{"id": "a", "label": "A"}, {"id": "b", "label": "B"}],
                "correct": "a", "duration": 60}
        interaction = (await http.post(f"/v1/episodes/{episode['id']}/interactions", json=body)).json()
        r = await http.post(f"/v1/interactions/{interaction['id']}/open", json={})
        assert r.status_code == 200, r.text
        return episode["id"], interaction["id"]


@asynccontextmanager
async def cluster(nursery: trio.Nursery, redis_url: str, db, front_roles: str,
                  role: str) -> AsyncIterator[tuple[NodeProcess, list[NodeProcess]]]:
    """A ``front`` process with ``front_roles`` and two processes of ``role`` (the ones a test kills);
    every one of them killed when the test is over."""
    front = NodeProcess(front_roles, env=cluster_env(redis_url, db, "front"))
    pair = [NodeProcess(role, env=cluster_env(redis_url, db, f"{role}-{i}")) for i in range(2)]
    try:
        for proc in (front, *pair):
            await proc.start(nursery)
        yield front, pair
    finally:
        for proc in (front, *pair):
            if not proc.exited.is_set():
                proc.kill()
                with trio.move_on_after(5):
                    await proc.exited.wait()


async def test_sdk_survives_its_core_node_dying_and_answers_exactly_once(nursery, redis_url, tmp_path):
    db = tmp_path / "c.db"
    async with cluster(nursery, redis_url, db, "gatekeeper,push,worker,scheduler", "core") as (front, cores):
        async with PlayToTVClient(front.listening["gatekeeper"], name="Ann") as client:
            with trio.fail_after(20):
                while len((await client.join())["core"]) < 2:  # both cores registered
                    await trio.sleep(0.2)
            first = client.core_url
            _, interaction_id = await open_quiz(first)
            by_url = {proc.listening["core"]: proc for proc in cores}
            by_url[first].send_signal(signal.SIGKILL)
            with trio.fail_after(20):
                accepted = await client.answer(interaction_id, "a")
            assert accepted["accepted"] is True
            assert client.core_url != first and client.failovers >= 1
            with trio.fail_after(20):
                while (results := await client.request("GET", f"/v1/interactions/{interaction_id}/results"))["total"] < 1:
                    await trio.sleep(0.1)
            await trio.sleep(0.5)
            results = await client.request("GET", f"/v1/interactions/{interaction_id}/results")
            assert results["total"] == 1 and results["counts"]["a"] == 1
            # a second attempt is refused, never counted
            with pytest.raises(ClientError) as e:
                await client.request("POST", f"/v1/interactions/{interaction_id}/answers", json={"choice": "a"})
            assert e.value.code == "already_answered"
            # tickets from this gatekeeper work on core; one signed with another secret does not
            forged, _ = KeyRing.from_secrets("another-secret-0123456789").issue(client.user_id, ttl=60)
            with pytest.raises(ClientError) as e:
                await client.request("GET", "/v1/me", auth=forged)
            assert e.value.status == 401


async def publish(broker, channel: str, numbers: range) -> None:
    for n in numbers:
        await broker.publish(channel, msgspec.json.encode({"type": "director.event", "event_type": "n",
                                                           "data": {"n": n}}))


async def receive_numbers(stream, count: int, into: list[int]) -> None:
    async for event in stream:
        assert not isinstance(event, StateLost), "a gap the server could not fill"
        if isinstance(event, MessageReceived) and event.channel.startswith("episode:"):
            into.append(message_data(event)["data"]["n"])
            if len(into) == count:
                return


async def test_sdk_survives_its_push_node_dying_without_losing_a_message(nursery, redis_url, tmp_path):
    db = tmp_path / "p.db"
    async with cluster(nursery, redis_url, db, "gatekeeper,core,worker,scheduler", "push") as (front, pushes):
        channel = keys.episode_channel("E-push")
        async with open_store(f"sqlite:///{db}") as store:
            await add_episode(store, "E-push")
        async with PlayToTVClient(front.listening["gatekeeper"]) as client, open_broker(redis_url) as broker:
            with trio.fail_after(20):
                while len((await client.join())["push"]) < 2:
                    await trio.sleep(0.2)
            got: list[int] = []
            async with client.push([channel]) as stream:
                with trio.fail_after(30):
                    async with trio.open_nursery() as n:
                        n.start_soon(receive_numbers, stream, 20, got)
                        while stream.transport is None or stream._ws is None:
                            await trio.sleep(0.05)
                        await trio.sleep(0.3)  # subscribed
                        await publish(broker, channel, range(1, 11))
                        while len(got) < 10:
                            await trio.sleep(0.05)
                        connected = client.session["push"][stream.node_index]["websocket"]
                        doomed = next(p for p in pushes if p.listening["push"] == connected)
                        doomed.send_signal(signal.SIGKILL)
                        await publish(broker, channel, range(11, 21))  # while the client is away
            assert got == list(range(1, 21))
            assert stream.node_index == 1 and stream.reconnects >= 1


async def test_sdk_falls_back_to_polling_when_the_websocket_port_is_blocked(nursery):
    node = await start_node(nursery, ["gatekeeper", "core", "push", "worker", "scheduler"])
    channel = keys.episode_channel("E-poll")
    await add_episode(node.ctx.store, "E-poll")
    async with PlayToTVClient(node.url("gatekeeper")) as client:
        await client.join()
        blocked = f"ws://127.0.0.1:{free_port()}/v1/ws"  # nothing listens: a firewall dropped the port
        for entry in client.session["push"]:
            entry["websocket"] = blocked
        got: list[int] = []
        async with client.push([channel]) as stream:
            with trio.fail_after(20):
                async with trio.open_nursery() as n:
                    n.start_soon(receive_numbers, stream, 10, got)
                    while stream.transport != "polling":
                        await trio.sleep(0.05)
                    await trio.sleep(0.3)
                    await publish(node.ctx.broker, channel, range(1, 11))
        assert got == list(range(1, 11)) and stream.transport == "polling"


@pytest.mark.slow  # a whole node, and the SDK waits out a real Retry-After
async def test_sdk_waits_and_retries_when_its_address_asked_too_often(nursery):
    node = await start_node(nursery, ["gatekeeper", "core", "push", "worker", "scheduler"],
                            gatekeeper_session_rate="2", gatekeeper_session_burst="1")
    async with PlayToTVClient(node.url("gatekeeper")) as first, PlayToTVClient(node.url("gatekeeper")) as second:
        with trio.fail_after(15):
            await first.join()
            await second.join()  # 429 rate_limited first (the burst is spent), admitted after Retry-After
        assert second.user_id != first.user_id
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{node.url('gatekeeper')}/metrics")).text
        assert 'playtotv_admissions_total{outcome="rate_limited"} 1.0' in metrics
