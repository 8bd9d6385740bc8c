"""``GET /v1/interactions/{id}/friends`` on a real embedded node: friends' choices of a scored interaction
are shown only to a viewer who answered it, or once it closed; polls show them at once.

Following needs no consent and user ids are public on leaderboards: without this rule anyone could follow
the top player and copy each answer while the quiz is open.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from playtotv.devtools.nodeprocess import NodeProcess
from tests.nodes import PORT0

pytestmark = pytest.mark.slow

TEST_BOUND = 60.0
POLL = 0.05


def env_for(tmp_path) -> dict[str, str]:
    return {**PORT0, "PLAYTOTV_STORE_URL": f"sqlite:///{tmp_path / 'friends.db'}", "PLAYTOTV_NODE_DRAIN_SECONDS": "2"}


class Platform:
    def __init__(self, node: NodeProcess, http: httpx.AsyncClient) -> None:
        self.http = http
        self.core = node.listening["core"]
        self.gatekeeper = node.listening["gatekeeper"]
        self.director = {"Authorization": f"Bearer {node.director_key}"}

    async def post(self, path: str, body: dict[str, Any], headers: dict[str, str], expect: int = 200) -> Any:
        r = await self.http.post(self.core + path, json=body, headers=headers)
        assert r.status_code == expect, f"{path}: {r.status_code} {r.text}"
        return r.json()

    async def viewer(self, name: str) -> tuple[str, dict[str, str]]:
        r = await self.http.post(self.gatekeeper + "/v1/session", json={})
        assert r.status_code == 200, r.text
        session = r.json()
        headers = {"Authorization": f"Bearer {session['ticket']}"}
        await self.http.put(self.core + "/v1/me", json={"name": name}, headers=headers)
        return session["user_id"], headers

    async def interaction(self, episode_id: str, body: dict[str, Any]) -> str:
        created = await self.post(f"/v1/episodes/{episode_id}/interactions", body, self.director, 201)
        await self.post(f"/v1/interactions/{created['id']}/open", {}, self.director)
        return created["id"]

    async def friends(self, interaction_id: str, headers: dict[str, str]) -> dict[str, Any]:
        r = await self.http.get(f"{self.core}/v1/interactions/{interaction_id}/friends", headers=headers)
        assert r.status_code == 200, r.text
        return r.json()

    async def stored(self, interaction_id: str, answers: int) -> None:
        """Wait until the worker stored (and counted) ``answers`` answers of the interaction."""
        while True:
            r = await self.http.get(f"{self.core}/v1/interactions/{interaction_id}/results", headers=self.director)
            if r.json()["total"] >= answers:
                return
            await trio.sleep(POLL)


def choices(view: dict[str, Any]) -> dict[str, Any]:
    return {f["user_id"]: f["choice"] for f in view["friends"]}


async def test_friends_choices_of_an_open_quiz_only_after_answering_or_closing(nursery, tmp_path) -> None:
    with trio.fail_after(TEST_BOUND):
        node = await NodeProcess("all", env=env_for(tmp_path)).start(nursery)
        async with httpx.AsyncClient(timeout=10) as http:
            p = Platform(node, http)
            show = await p.post("/v1/shows", {"title": "Quiz"}, p.director, 201)
            episode = await p.post(f"/v1/shows/{show['id']}/episodes", {"title": "One"}, p.director, 201)
            await p.post(f"/v1/episodes/{episode['id']}/start", {}, p.director)
            top, top_headers = await p.viewer("Top")
            copycat, copycat_headers = await p.viewer("Copycat")
            latecomer, latecomer_headers = await p.viewer("Late")
            for headers in (copycat_headers, latecomer_headers):
                await p.post("/v1/me/friends", {"user_id": top}, headers, 201)

            quiz = await p.interaction(episode["id"], {
                "kind": "quiz", "prompt": "Capital of France?", "correct": "b", "duration": 120,
                "options": [{"id": "a", "label": "Lyon"}, {"id": "b", "label": "Paris"}]})
            await p.post(f"/v1/interactions/{quiz}/answers", {"choice": "b"}, top_headers, 202)
            await p.stored(quiz, 1)

            # Open, not answered: nothing to copy.
            sealed = await p.friends(quiz, copycat_headers)
            assert (sealed["friends"], sealed["hidden"]) == ([], True)
            # Answered: the friend's choice shows at once (before the worker stored the caller's answer).
            await p.post(f"/v1/interactions/{quiz}/answers", {"choice": "a"}, copycat_headers, 202)
            assert choices(await p.friends(quiz, copycat_headers)) == {top: "b"}
            assert (await p.friends(quiz, latecomer_headers))["hidden"] is True
            # Closed: everyone sees.
            await p.post(f"/v1/interactions/{quiz}/close", {}, p.director)
            opened_view = await p.friends(quiz, latecomer_headers)
            assert choices(opened_view) == {top: "b"} and opened_view["hidden"] is False

            # A poll earns nothing and its totals are public while open: friends' choices show at once.
            poll = await p.interaction(episode["id"], {
                "kind": "poll", "prompt": "Tea or coffee?", "duration": 120,
                "options": [{"id": "tea", "label": "Tea"}, {"id": "coffee", "label": "Coffee"}]})
            await p.post(f"/v1/interactions/{poll}/answers", {"choice": "tea"}, top_headers, 202)
            await p.stored(poll, 1)
            assert choices(await p.friends(poll, latecomer_headers)) == {top: "tea"}
