"""The viewer's name: given to the gatekeeper (``POST /v1/session {"name"}``), it is the viewer's name in
``/v1/me`` and on leaderboards; a resume with a new name renames, one without keeps it; names are
validated on the way in (length, control characters, bidirectional overrides). Through a real node."""

from __future__ import annotations

import httpx
import pytest
import trio

from playtotv.client import PlayToTVClient
from tests.inprocess import start_node

BOUND = 30.0
DIRECTOR = {"Authorization": "Bearer director-key-0123456789"}  # tests.inprocess DEFAULTS
ALL_ROLES = ["gatekeeper", "core", "push", "worker", "scheduler"]


def bearer(ticket: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {ticket}"}


async def join(gatekeeper: httpx.AsyncClient, **body: str) -> dict:
    r = await gatekeeper.post("/v1/session", json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def me(core: httpx.AsyncClient, ticket: str) -> dict:
    r = await core.get("/v1/me", headers=bearer(ticket))
    assert r.status_code == 200, r.text
    return r.json()


async def test_the_name_given_to_the_gatekeeper_is_the_viewers_name_in_me_and_on_the_leaderboard(nursery):
    node = await start_node(nursery, ALL_ROLES)
    async with httpx.AsyncClient(base_url=node.url("gatekeeper"), timeout=10) as gatekeeper, \
            httpx.AsyncClient(base_url=node.url("core"), timeout=10) as core:
        with trio.fail_after(BOUND):
            ann = await join(gatekeeper, name="Ann")
            # the very first request of the ticket is an answer: the name still comes with it
            show = (await core.post("/v1/shows", json={"title": "S"}, headers=DIRECTOR)).json()
            episode = (await core.post(f"/v1/shows/{show['id']}/episodes", json={"title": "E", "mode": "live"},
                                       headers=DIRECTOR)).json()
            await core.post(f"/v1/episodes/{episode['id']}/start", json={}, headers=DIRECTOR)
            quiz = {"kind": "quiz", "prompt": "?", "options": [{"id": "a", "label": "A"}, {"id": "b", "label": "B"}],
                    "correct": "a", "duration": 60}
            interaction = (await core.post(f"/v1/episodes/{episode['id']}/interactions", json=quiz,
                                           headers=DIRECTOR)).json()
            await core.post(f"/v1/interactions/{interaction['id']}/open", json={}, headers=DIRECTOR)
            r = await core.post(f"/v1/interactions/{interaction['id']}/answers", json={"choice": "a"},
                                headers=bearer(ann["ticket"]))
            assert r.status_code == 202, r.text
            await core.post(f"/v1/interactions/{interaction['id']}/close", json={}, headers=DIRECTOR)
            await core.post(f"/v1/interactions/{interaction['id']}/reveal", json={}, headers=DIRECTOR)
            while True:
                board = (await core.get(f"/v1/episodes/{episode['id']}/leaderboard", headers=DIRECTOR)).json()
                if board["entries"]:
                    break
                await trio.sleep(0.05)
            assert [(e["user_id"], e["name"]) for e in board["entries"]] == [(ann["user_id"], "Ann")]
            profile = await me(core, ann["ticket"])
            assert profile["user_id"] == ann["user_id"] and profile["name"] == "Ann"
            anonymous = await join(gatekeeper)
            assert (await me(core, anonymous["ticket"]))["name"].startswith("Viewer ")


async def test_a_resume_with_a_new_name_renames_and_one_without_keeps_the_name(nursery):
    node = await start_node(nursery, ALL_ROLES)
    core_api = node.ctx.extras["core"]
    async with httpx.AsyncClient(base_url=node.url("gatekeeper"), timeout=10) as gatekeeper, \
            httpx.AsyncClient(base_url=node.url("core"), timeout=10) as core:
        with trio.fail_after(BOUND):
            first = await join(gatekeeper, name="Ann")
            assert (await me(core, first["ticket"]))["name"] == "Ann"
            renamed = await join(gatekeeper, resume=first["ticket"], name="Bea")
            assert renamed["user_id"] == first["user_id"]
            assert (await me(core, renamed["ticket"]))["name"] == "Bea"
            kept = await join(gatekeeper, resume=renamed["ticket"])
            assert (await me(core, kept["ticket"]))["name"] == "Bea"
            # An older ticket seen by a core for the first time (a failover: the process never saw it)
            # does not undo a later choice.
            core_api.ticket_names.forget()
            assert (await me(core, first["ticket"]))["name"] == "Bea"
            # A rename through PUT /v1/me holds against tickets issued before it...
            r = await core.put("/v1/me", json={"name": "Cy"}, headers=bearer(kept["ticket"]))
            assert r.status_code == 200 and r.json()["name"] == "Cy"
            core_api.ticket_names.forget()
            assert (await me(core, renamed["ticket"]))["name"] == "Cy"
            # ...and a resume that names someone else afterwards renames again.
            again = await join(gatekeeper, resume=kept["ticket"], name="Dot")
            assert (await me(core, again["ticket"]))["name"] == "Dot"


BAD_NAMES = {
    "empty": "",
    "blank": "   ",
    "too long": "A" * 65,
    "NUL": "Ann\x00",
    "newline": "Ann\nBob",
    "escape": "\x1b[31mAnn",
    "C1 control": "Ann\x85",
    "right-to-left override": "Ann\u202egnp.exe",
    "left-to-right embedding": "\u202aAnn",
    "isolate": "\u2067Ann",
    "line separator": "Ann\u2028Bob",
}


@pytest.mark.parametrize("name", list(BAD_NAMES.values()), ids=list(BAD_NAMES))
async def test_a_bad_name_is_a_clear_400_and_changes_nothing(nursery, name):
    node = await start_node(nursery, ALL_ROLES)
    async with httpx.AsyncClient(base_url=node.url("gatekeeper"), timeout=10) as gatekeeper, \
            httpx.AsyncClient(base_url=node.url("core"), timeout=10) as core:
        with trio.fail_after(BOUND):
            before = (await gatekeeper.get("/v1/status")).json()["admitted"]
            r = await gatekeeper.post("/v1/session", json={"name": name})
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert error["code"] == "bad_request" and "name" in error["message"]
            assert (await gatekeeper.get("/v1/status")).json()["admitted"] == before
            ann = await join(gatekeeper, name="Ann")
            r = await core.put("/v1/me", json={"name": name}, headers=bearer(ann["ticket"]))
            assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", r.text
            assert "name" in r.json()["error"]["message"]
            assert (await me(core, ann["ticket"]))["name"] == "Ann"


async def test_names_in_any_script_emoji_and_spacing_are_kept(nursery):
    node = await start_node(nursery, ALL_ROLES)
    async with httpx.AsyncClient(base_url=node.url("gatekeeper"), timeout=10) as gatekeeper, \
            httpx.AsyncClient(base_url=node.url("core"), timeout=10) as core:
        with trio.fail_after(BOUND):
            for name in ("Zoë", "علي", "山田 太郎", "👩\u200d💻 dev", "A" * 64, "  Ann  "):
                joined = await join(gatekeeper, name=name)
                assert (await me(core, joined["ticket"]))["name"] == name.strip()


async def test_the_sdk_sends_its_name_and_keeps_a_rename_across_a_resume(nursery):
    node = await start_node(nursery, ALL_ROLES)
    with trio.fail_after(BOUND):
        async with PlayToTVClient(node.url("gatekeeper"), name="Ann") as client:
            await client.join()
            assert (await client.request("GET", "/v1/me"))["name"] == "Ann"
            assert (await client.rename("Bea"))["name"] == "Bea"
            await client.join()  # a resume (a failover, an expired ticket) must not undo the rename
            assert (await client.request("GET", "/v1/me"))["name"] == "Bea"
            assert client.name == "Bea"
