"""SIGTERM drains, it does not drop: every answer an embedded node acknowledged (202) is in its store after
it exits, and counted after a restart.

In embedded mode the answer queue lives in the process's memory, so whatever the worker has not written
when the process exits is gone. A burst of answers keeps coming while the node is told to stop.
"""

from __future__ import annotations

import signal

import httpx
import pytest
import trio

from playtotv.credentials import KeyRing
from playtotv.gameplay import ids, schema
from playtotv.store import open_store
from playtotv.devtools.nodeprocess import NodeProcess
from tests.nodes import PORT0

pytestmark = pytest.mark.slow

SECRET = "drain-test-secret-0123456789"
DIRECTOR = "dk_drain_test_director_key"
#: Viewers answering, each once, from this many concurrent clients: the burst outlasts the SIGTERM.
VIEWERS = 4000
CLIENTS = 12
#: Answers acknowledged before the SIGTERM is sent.
BEFORE_SIGTERM = 150
TEST_BOUND = 90.0


def env_for(db) -> dict[str, str]:
    return {**PORT0, "PLAYTOTV_STORE_URL": f"sqlite:///{db}", "PLAYTOTV_AUTH_SECRET": SECRET,
            "PLAYTOTV_AUTH_DIRECTOR_KEYS": DIRECTOR, "PLAYTOTV_NODE_DRAIN_SECONDS": "10"}


async def open_quiz(http: httpx.AsyncClient, core: str) -> str:
    director = {"Authorization": f"Bearer {DIRECTOR}"}

    async def post(path: str, body: dict) -> dict:
        r = await http.post(core + path, json=body, headers=director)
        assert r.status_code in (200, 201), f"{path}: {r.status_code} {r.text}"
        return r.json()

    show = await post("/v1/shows", {"title": "Drain"})
    episode = await post(f"/v1/shows/{show['id']}/episodes", {"title": "One"})
    await post(f"/v1/episodes/{episode['id']}/start", {})
    quiz = await post(f"/v1/episodes/{episode['id']}/interactions", {
        "kind": "quiz", "prompt": "?", "correct": "a", "duration": 600,
        "options": [{"id": "a", "label": "A"}, {"id": "b", "label": "B"}]})
    await post(f"/v1/interactions/{quiz['id']}/open", {})
    return quiz["id"]


async def test_every_answer_acknowledged_around_a_sigterm_is_stored(nursery, tmp_path) -> None:
    db = tmp_path / "drain.db"
    ring = KeyRing.from_secrets(SECRET)
    accepted: list[str] = []
    stopping = trio.Event()
    with trio.fail_after(TEST_BOUND):
        node = await NodeProcess("all", env=env_for(db)).start(nursery)
        core = node.listening["core"]
        async with httpx.AsyncClient(timeout=10) as http:
            interaction_id = await open_quiz(http, core)

            async def answer_from(client: int) -> None:
                for n in range(client, VIEWERS, CLIENTS):
                    user_id = f"u_{n}"
                    ticket, _ = ring.issue(user_id, ttl=600)
                    try:
                        r = await http.post(f"{core}/v1/interactions/{interaction_id}/answers",
                                            json={"choice": "a"}, headers={"Authorization": f"Bearer {ticket}"})
                    except httpx.TransportError:
                        assert stopping.is_set()
                        return  # the node stopped listening
                    if r.status_code != 202:
                        assert stopping.is_set(), r.text
                        return
                    accepted.append(user_id)

            async with trio.open_nursery() as clients:
                for client in range(CLIENTS):
                    clients.start_soon(answer_from, client)
                while len(accepted) < BEFORE_SIGTERM:
                    await trio.sleep(0.005)
                stopping.set()
                node.send_signal(signal.SIGTERM)
            await node.exited.wait()
            assert node.returncode == 0
        assert BEFORE_SIGTERM <= len(accepted) < VIEWERS  # the burst really went on around the signal

        async with open_store(f"sqlite:///{db}") as store:
            stored = await store.get_many(schema.ANSWERS, [ids.answer_id(interaction_id, u) for u in accepted])
        missing = set(accepted) - {doc["user_id"] for doc in stored}
        assert not missing, f"{len(missing)} of {len(accepted)} acknowledged answers lost"

        again = await NodeProcess("all", env=env_for(db)).start(nursery)
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.get(f"{again.listening['core']}/v1/interactions/{interaction_id}/results",
                               headers={"Authorization": f"Bearer {DIRECTOR}"})
        # An answer stored just before the drain cut its connection is counted without the client having
        # seen its 202 (a retry would be deduplicated): the results count what is stored, each once.
        async with open_store(f"sqlite:///{db}") as store:
            all_stored = await store.get_many(schema.ANSWERS, [ids.answer_id(interaction_id, f"u_{n}")
                                                               for n in range(VIEWERS)])
        assert r.json()["total"] == len(all_stored) >= len(accepted)
        await again.terminate()
