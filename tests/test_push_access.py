"""Which channels a client may follow: its own user channel and channels of episodes that exist.

A made-up ``episode:<id>`` is ``not_found`` on both transports and leaves nothing behind in the broker
(it must not be able to make Redis or the embedded broker keep state for names nobody publishes to). The
existence check is cheap: cached both ways, one store read per id however many clients ask at once.
"""

from __future__ import annotations

import coredis
import httpx
import msgspec
import pytest
import trio
import trio.testing

from playtotv.broker import open_broker
from playtotv.roles.push.access import EpisodeDirectory
from playtotv.store.base import StoreUnavailable
from tests.pushkit import client, push_node, recv, subscribe

BOUND = 10.0
MADE_UP = [f"episode:e_madeup{i}" for i in range(20)]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.slow)])
def broker_url(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


async def channel_state(broker, broker_url: str | None) -> set[str]:
    """The channels the broker holds state for (white box: memory dict, or the Redis keys)."""
    if broker_url is None:
        return set(broker._channels)
    async with coredis.Redis.from_url(broker_url) as admin:
        return {key.decode().split(":", 2)[2] async for key in admin.scan_iter(match="ptv:epoch:*")}


async def test_made_up_episode_channels_are_not_found_and_leave_nothing(broker_url: str | None) -> None:
    with trio.fail_after(BOUND):
        async with open_broker(broker_url) as broker, push_node(broker) as node, \
                client(node, "ann") as ws, httpx.AsyncClient() as http:
            for channel in MADE_UP:
                await ws.send_message(msgspec.json.encode({"type": "subscribe", "channel": channel}).decode())
                error = await recv(ws)
                assert (error["type"], error["code"]) == ("error", "not_found"), error
                r = await http.get(node.poll_url(), params={"ticket": node.ticket("ann"), "channel": channel,
                                                            "timeout": 0})
                assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
            # One made-up channel among real ones refuses the whole poll, and nothing is held for it.
            r = await http.get(node.poll_url(), params=[("ticket", node.ticket("ann")), ("channel", "episode:E1"),
                                                        ("channel", MADE_UP[0]), ("timeout", "0")])
            assert r.status_code == 404
            # Still connected, and a real episode can be followed.
            reply = await subscribe(ws, "episode:E1")
            assert reply["recovered"] is True
            held = await channel_state(broker, broker_url)
            assert not held & set(MADE_UP), held & set(MADE_UP)
            assert not set(node.hub.channels) & set(MADE_UP)


async def test_the_check_costs_one_store_read_per_id() -> None:
    """Repeating a made-up name costs nothing; a thousand clients joining one new episode at once cost one
    read; and the episode's existence is then known for good (episodes are never deleted)."""
    with trio.fail_after(BOUND):
        async with push_node() as node, client(node, "ann") as ws:
            directory = _directory(node)
            before = directory.store_reads
            for _ in range(30):
                await ws.send_message('{"type":"subscribe","channel":"episode:e_nobody"}')
                assert (await recv(ws))["code"] == "not_found"
            assert directory.store_reads == before + 1

            answers: list[bool] = []

            async def ask() -> None:
                answers.append(await directory.exists("episode:E2"))

            async with trio.open_nursery() as nursery:
                for _ in range(1000):
                    nursery.start_soon(ask)
            assert answers == [True] * 1000 and directory.store_reads == before + 2
            assert await directory.exists("episode:E2") and directory.store_reads == before + 2
            assert await directory.exists("user:ann") and directory.store_reads == before + 2


def _directory(node) -> EpisodeDirectory:
    return node.runtime.server.services.directory


# -- the directory alone, on trio's clock -------------------------------------------------------------------

class FakeEpisodes:
    def __init__(self, *ids: str) -> None:
        self.ids = set(ids)
        self.down = False
        self.reads: list[str] = []

    async def __call__(self, episode_id: str) -> bool:
        self.reads.append(episode_id)
        await trio.sleep(0.01)
        if self.down:
            raise StoreUnavailable("store down")
        return episode_id in self.ids


async def test_unknown_ids_are_forgotten_after_their_ttl(autojump_clock: trio.testing.MockClock) -> None:
    episodes = FakeEpisodes()
    directory = EpisodeDirectory(episodes, unknown_ttl=60)
    assert not await directory.exists("episode:e_later")
    episodes.ids.add("e_later")  # (cannot happen with server-chosen ids; shows the memory is bounded in time)
    await trio.sleep(59)
    assert not await directory.exists("episode:e_later") and len(episodes.reads) == 1
    await trio.sleep(2)
    assert await directory.exists("episode:e_later") and len(episodes.reads) == 2


async def test_both_caches_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    episodes = FakeEpisodes(*(f"e_{i}" for i in range(50)))
    directory = EpisodeDirectory(episodes, known_max=10, unknown_max=10)
    for i in range(50):
        assert await directory.exists(f"episode:e_{i}")
        assert not await directory.exists(f"episode:x_{i}")
    assert len(directory._known) == 10 and len(directory._unknown) == 10
    assert await directory.exists("episode:e_49") and len(episodes.reads) == 100  # the latest are kept


async def test_a_store_outage_reaches_every_asker_and_is_not_cached(autojump_clock: trio.testing.MockClock) -> None:
    episodes = FakeEpisodes("e_1")
    episodes.down = True
    directory = EpisodeDirectory(episodes)
    failures: list[str] = []

    async def ask() -> None:
        try:
            await directory.exists("episode:e_1")
        except StoreUnavailable as e:
            failures.append(str(e))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(ask)
    assert failures == ["store down"] * 5 and len(episodes.reads) == 1
    episodes.down = False
    assert await directory.exists("episode:e_1")


async def test_a_cancelled_reader_leaves_the_others_to_ask_again(autojump_clock: trio.testing.MockClock) -> None:
    episodes = FakeEpisodes("e_1")
    directory = EpisodeDirectory(episodes)
    answers: list[bool] = []

    async def impatient() -> None:
        with trio.move_on_after(0.005):  # gives up half-way through its 10 ms read
            await directory.exists("episode:e_1")

    async def patient() -> None:
        answers.append(await directory.exists("episode:e_1"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(impatient)
        await trio.sleep(0.001)  # virtual time: the impatient read is under way
        nursery.start_soon(patient)
    assert answers == [True] and len(episodes.reads) == 2
