"""The scheduler fires prerecorded timelines exactly once, on time or late-and-saying-so, and closes
interactions at their deadline; a killed leader is replaced and nothing fires twice (docs/reliability.md #14, #15)."""

from __future__ import annotations

import signal
import time
from collections import Counter

import httpx
import msgspec
import pytest
import trio

from playtotv import keys
from playtotv.broker import open_broker
from playtotv.registry import open_registry
from playtotv.roles.scheduler.agenda import Job
from playtotv.roles.scheduler.timeline import TIMELINE_LOG, all_jobs
from tests.inprocess import start_node
from playtotv.devtools.nodeprocess import NodeProcess

DIRECTOR = {"Authorization": "Bearer director-key-0123456789"}


def quiz(prompt: str, duration: float = 30) -> dict:
    return {"kind": "quiz", "prompt": prompt, "options": [{"id": "a", "label": "A"}, {"id": "b", "label": "B"}],
            "correct": "a", "duration": duration}


async def prerecorded(http: httpx.AsyncClient, entries: list[tuple[float, dict]]) -> dict:
    show = (await http.post("/v1/shows", json={"title": "Recorded"}, headers=DIRECTOR)).json()
    body = {"title": "Ep", "mode": "prerecorded",
            "timeline": [{"at": at, "interaction": interaction} for at, interaction in entries]}
    r = await http.post(f"/v1/shows/{show['id']}/episodes", json=body, headers=DIRECTOR)
    assert r.status_code == 201, r.text
    return r.json()


async def collect(broker, channel: str, into: list[tuple[float, dict]], ready: trio.Event) -> None:
    async with broker.subscribe([channel]) as sub:
        ready.set()
        async for item in sub:
            if hasattr(item, "data"):
                into.append((time.time(), msgspec.json.decode(item.data)))


def opened(messages: list[tuple[float, dict]]) -> Counter:
    return Counter(m["interaction"]["prompt"] for _, m in messages if m["type"] == "interaction.opened")


@pytest.mark.slow  # a whole node waiting on a timeline in real time
async def test_timeline_fires_each_entry_once_and_deadline_closes(nursery):
    node = await start_node(nursery, ["core", "worker", "scheduler"])
    async with httpx.AsyncClient(base_url=node.url("core"), timeout=10) as http:
        episode = await prerecorded(http, [(0.5, quiz("one", duration=0.5)), (1.0, quiz("two")), (1.5, quiz("three"))])
        messages: list[tuple[float, dict]] = []
        ready = trio.Event()
        nursery.start_soon(collect, node.ctx.broker, keys.episode_channel(episode["id"]), messages, ready)
        await ready.wait()
        started = time.time()
        r = await http.post(f"/v1/episodes/{episode['id']}/start", json={"at": started}, headers=DIRECTOR)
        assert r.status_code == 200, r.text
        with trio.fail_after(15):
            while sum(opened(messages).values()) < 3 or not any(m["type"] == "interaction.closed" for _, m in messages):
                await trio.sleep(0.05)
        await trio.sleep(0.5)  # anything fired twice would show up now
    assert opened(messages) == {"one": 1, "two": 1, "three": 1}
    at = {"one": 0.5, "two": 1.0, "three": 1.5}
    for received, m in messages:
        if m["type"] == "interaction.opened":
            # never early; within the late grace (no tighter timing assertion on a shared machine)
            assert received >= started + at[m["interaction"]["prompt"]] - 0.05
            assert m.get("late_by", 0.0) < 5.0
    closed = [m for _, m in messages if m["type"] == "interaction.closed"]
    first_id = next(m["interaction"]["id"] for _, m in messages
                    if m["type"] == "interaction.opened" and m["interaction"]["prompt"] == "one")
    assert [c["interaction_id"] for c in closed] == [first_id]  # closed by itself, nobody asked


@pytest.mark.slow  # a whole node waiting on a timeline in real time
async def test_late_start_fires_within_grace_and_skips_older_entries(nursery):
    node = await start_node(nursery, ["core", "worker", "scheduler"], scheduler_late_grace="5")
    async with httpx.AsyncClient(base_url=node.url("core"), timeout=10) as http:
        episode = await prerecorded(http, [(1, quiz("too-old")), (8, quiz("late")), (11, quiz("on-time"))])
        messages: list[tuple[float, dict]] = []
        ready = trio.Event()
        nursery.start_soon(collect, node.ctx.broker, keys.episode_channel(episode["id"]), messages, ready)
        await ready.wait()
        # the broadcast started 10 s ago: entry +1 is 9 s late (skip), +8 is 2 s late (fire), +11 is ahead
        r = await http.post(f"/v1/episodes/{episode['id']}/start", json={"at": time.time() - 10}, headers=DIRECTOR)
        assert r.status_code == 200
        with trio.fail_after(15):
            while opened(messages)["on-time"] < 1:
                await trio.sleep(0.05)
        await trio.sleep(0.3)
    assert opened(messages) == {"late": 1, "on-time": 1}
    late = next(m for _, m in messages if m["type"] == "interaction.opened" and m["interaction"]["prompt"] == "late")
    assert 1.5 <= late["late_by"] < 5
    records = {r["outcome"]: r for r in await node.ctx.store.find(TIMELINE_LOG, {"episode_id": episode["id"]})}
    assert set(records) == {"skipped", "fired"}
    assert records["skipped"]["late_by"] > 5
    skipped_id = records["skipped"]["interaction_id"]
    async with httpx.AsyncClient(base_url=node.url("core"), timeout=10) as http:
        assert (await http.get(f"/v1/interactions/{skipped_id}", headers=DIRECTOR)).json()["status"] == "draft"


async def test_ending_the_episode_cancels_what_remains(nursery):
    node = await start_node(nursery, ["core", "worker", "scheduler"])
    scheduler = node.ctx.scheduler
    async with httpx.AsyncClient(base_url=node.url("core"), timeout=10) as http:
        episode = await prerecorded(http, [(0.3, quiz("first")), (60.0, quiz("never"))])
        messages: list[tuple[float, dict]] = []
        ready = trio.Event()
        nursery.start_soon(collect, node.ctx.broker, keys.episode_channel(episode["id"]), messages, ready)
        await ready.wait()
        await http.post(f"/v1/episodes/{episode['id']}/start", json={"at": time.time()}, headers=DIRECTOR)
        with trio.fail_after(10):
            while opened(messages)["first"] < 1:
                await trio.sleep(0.05)
        await http.post(f"/v1/episodes/{episode['id']}/end", json={}, headers=DIRECTOR)
    # The store no longer asks for the rest, and the leader, made to fire it now (the same job key replaces
    # any version it still holds), cancels it instead of opening it.
    assert not [job for job in await all_jobs(scheduler.gameplay) if job.episode_id == episode["id"]]
    never = next(d for d in await scheduler.gameplay.interactions_of(episode["id"]) if d.prompt == "never")
    scheduler.agenda.add(Job("fire", episode["id"], never.id, scheduler.gameplay.clock()))
    scheduler.wake.set()
    with trio.fail_after(10):
        while not [f for f in scheduler.fired if f[0] == never.id]:
            await trio.sleep(0.05)
    assert [outcome for iid, outcome, _ in scheduler.fired if iid == never.id] == ["cancelled"]
    assert opened(messages) == {"first": 1}


@pytest.mark.slow  # a whole node waiting on a timeline in real time
async def test_scheduled_prerecorded_episode_starts_by_itself(nursery):
    node = await start_node(nursery, ["core", "worker", "scheduler"])
    async with httpx.AsyncClient(base_url=node.url("core"), timeout=10) as http:
        show = (await http.post("/v1/shows", json={"title": "S"}, headers=DIRECTOR)).json()
        body = {"title": "auto", "mode": "prerecorded", "starts_at": time.time() + 0.5,
                "timeline": [{"at": 0.3, "interaction": quiz("auto")}]}
        episode = (await http.post(f"/v1/shows/{show['id']}/episodes", json=body, headers=DIRECTOR)).json()
        with trio.fail_after(10):
            while True:
                view = (await http.get(f"/v1/episodes/{episode['id']}", headers=DIRECTOR)).json()
                if view["current"] is not None and view["current"]["status"] == "open":
                    break
                await trio.sleep(0.1)
        assert view["status"] == "live"


async def test_three_schedulers_leader_killed_between_entries_every_entry_fires_once(nursery, redis_url, tmp_path):
    """docs/reliability.md #14/#15 with real processes: SIGKILL the leader after the first entry; the rest still
    fire exactly once (late rather than never)."""
    db = tmp_path / "cluster.db"
    base = {"PLAYTOTV_REDIS_URL": redis_url, "PLAYTOTV_STORE_URL": f"sqlite:///{db}",
            "PLAYTOTV_AUTH_SECRET": "test-secret-0123456789", "PLAYTOTV_AUTH_DIRECTOR_KEYS": "director-key-0123456789",
            "PLAYTOTV_CORE_BIND": "127.0.0.1:0", "PLAYTOTV_SCHEDULER_LEASE_TTL": "1.5",
            "PLAYTOTV_NODE_DRAIN_SECONDS": "2"}
    core = await NodeProcess("core,worker", env={**base, "PLAYTOTV_NODE_ID": "core-1"}).start(nursery)
    schedulers = {}
    for i in range(3):
        proc = NodeProcess("scheduler", env={**base, "PLAYTOTV_NODE_ID": f"sched-{i}"})
        schedulers[f"sched-{i}"] = await proc.start(nursery)
    try:
        async with open_broker(redis_url) as broker, open_registry(redis_url) as registry, \
                httpx.AsyncClient(base_url=core.listening["core"], timeout=10) as http:
            episode = await prerecorded(http, [(2, quiz("e2", duration=1)), (3, quiz("e3")), (4, quiz("e4"))])
            messages: list[tuple[float, dict]] = []
            ready = trio.Event()
            nursery.start_soon(collect, broker, keys.episode_channel(episode["id"]), messages, ready)
            await ready.wait()

            async def leader() -> str:
                with trio.fail_after(10):
                    while True:
                        leaders = [n.id for n in await registry.nodes() if n.load.get("leader") == 1.0]
                        if len(leaders) == 1:
                            return leaders[0]
                        await trio.sleep(0.1)

            await http.post(f"/v1/episodes/{episode['id']}/start", json={"at": time.time()}, headers=DIRECTOR)
            with trio.fail_after(15):
                while opened(messages)["e2"] < 1:
                    await trio.sleep(0.05)
            doomed = await leader()
            schedulers[doomed].send_signal(signal.SIGKILL)
            with trio.fail_after(20):
                while sum(opened(messages).values()) < 3 or not any(
                        m["type"] == "interaction.closed" for _, m in messages):
                    await trio.sleep(0.05)
            await trio.sleep(1.0)  # a second firing would arrive now
            assert opened(messages) == {"e2": 1, "e3": 1, "e4": 1}
            assert await leader() != doomed
    finally:
        for proc in [core, *schedulers.values()]:
            if not proc.exited.is_set():
                await proc.terminate()


async def test_probe_measures_core_and_push_and_reports_qos(nursery):
    from playtotv.roles.scheduler.probe import probe_once

    node = await start_node(nursery, ["core", "push", "worker", "scheduler"])
    async with httpx.AsyncClient(timeout=5) as http:
        with trio.fail_after(10):
            report = await probe_once(node.ctx, http)
    signals = report.signals
    assert set(signals) == {"probe_core_rtt_ms", "probe_push_delay_ms"} and report.unreachable == set()
    assert 0 < signals["probe_core_rtt_ms"] < 3000 and 0 < signals["probe_push_delay_ms"] < 3000


async def test_a_node_that_fails_its_probe_is_reported_unreachable_not_slow(nursery, monkeypatch):
    """Dead is not slow: a registered node that refuses the probe, never answers it, or answers it with an
    error is named in ``unreachable`` and measured not at all, so it cannot read as a QoS breach (a
    SIGKILLed core once gave probe_core_rtt_ms=3000 and closed the platform's doors)."""
    from playtotv.registry.base import NodeInfo
    from playtotv.roles.scheduler import probe
    from playtotv.roles.scheduler.probe import probe_once

    PROBE_TIMEOUT = 1.0  # the silent node costs the test this long; still ample for the live ones
    monkeypatch.setattr(probe, "PROBE_TIMEOUT", PROBE_TIMEOUT)

    node = await start_node(nursery, ["core", "push", "worker", "scheduler"])
    closed = trio.socket.socket()
    await closed.bind(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connection refused
    silent = trio.socket.socket()
    await silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts, nobody ever answers: the probe times out
    silent_port = silent.getsockname()[1]
    core_url = node.listening["core"]
    dead = [
        NodeInfo(id="core-refused", roles=["core"], endpoints={"core": f"http://127.0.0.1:{refused_port}"}),
        NodeInfo(id="core-silent", roles=["core"], endpoints={"core": f"http://127.0.0.1:{silent_port}"}),
        NodeInfo(id="core-erring", roles=["core"], endpoints={"core": f"{core_url}/no-such-path"}),
        NodeInfo(id="push-refused", roles=["push"], endpoints={"push_ws": f"ws://127.0.0.1:{refused_port}/v1/ws"}),
    ]
    for info in dead:
        await node.ctx.registry.heartbeat(info, ttl=60)
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            with trio.fail_after(PROBE_TIMEOUT + 10):
                report = await probe_once(node.ctx, http)
    finally:
        silent.close()
    assert report.unreachable == {info.id for info in dead}
    assert set(report.signals) == {"probe_core_rtt_ms", "probe_push_delay_ms"}  # the live nodes only
    assert report.signals["probe_core_rtt_ms"] < PROBE_TIMEOUT * 1000 * 0.9
