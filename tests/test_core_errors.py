"""Every error of docs/api.md's table, produced by the case that should produce it, with nothing stored.

(``at_capacity`` is the gatekeeper's and is tested with it.) Each case checks the status, the code and
the body shape; at the end the store and the queues show that no refused request left a trace.
"""

from __future__ import annotations

import httpx
import pytest
import trio

from playtotv import keys
from playtotv.credentials import KeyRing
from playtotv.gameplay import schema
from tests.playkit import Play, quiz, running

TEST_BOUND = 30.0


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.slow)])
def backend(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


def check_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, f"{r.status_code} {r.text}"
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


async def stored(play: Play) -> dict[str, int]:
    counts = {c: await play.ctx.store.count(c) for c in (schema.SHOWS, schema.EPISODES, schema.INTERACTIONS,
                                                          schema.ANSWERS, schema.FOLLOWS, schema.ACHIEVEMENTS)}
    answers = await play.ctx.broker.queue_stats(keys.ANSWER_QUEUE)
    counts["queued_answers"] = answers["waiting"] + answers["pending"]
    return counts


async def test_every_error_and_nothing_stored(backend: str | None) -> None:
    with trio.fail_after(TEST_BOUND):
        # No worker: every accepted answer stays visible in the queue, every refused one is absent.
        async with running(backend, roles=("core",), closer=False) as play:
            episode_id = await play.live_episode()
            interaction_id = await play.interaction(episode_id, quiz("a"))
            draft_id = await play.interaction(episode_id, quiz("a"), open_it=False)
            rating_id = await play.interaction(episode_id, {"kind": "rating", "prompt": "Rate", "scale": [1, 5]})
            before = await stored(play)
            await bad_requests(play, episode_id, interaction_id)
            await unauthorized(play, interaction_id)
            await forbidden(play, episode_id, interaction_id)
            await not_found(play, episode_id)
            await conflicts(play, episode_id, interaction_id, draft_id)
            await invalid_choices(play, interaction_id, rating_id)
            assert await stored(play) == before
            # and a valid answer still goes through afterwards (one queued, one 409 on retry)
            ok = await play.http.post(f"/v1/interactions/{interaction_id}/answers", json={"choice": "a"},
                                      headers=play.viewer("u_ok"))
            assert ok.status_code == 202
            again = await play.http.post(f"/v1/interactions/{interaction_id}/answers", json={"choice": "b"},
                                         headers=play.viewer("u_ok"))
            check_error(again, 409, "already_answered")
            assert (await stored(play))["queued_answers"] == before["queued_answers"] + 1


async def bad_requests(play: Play, episode_id: str, interaction_id: str) -> None:
    http, viewer = play.http, play.viewer("u_bad")
    answers = f"/v1/interactions/{interaction_id}/answers"
    check_error(await http.post(answers, content=b"{not json", headers=viewer), 400, "bad_request")
    check_error(await http.post(answers, json={"choice": [1, 2]}, headers=viewer), 400, "bad_request")
    check_error(await http.post(answers, json={}, headers=viewer), 400, "bad_request")  # choice missing
    too_big = {"choice": "a", "padding": "x" * (17 * 1024)}
    r = await http.post(answers, json=too_big, headers=viewer)
    assert r.status_code in (400, 413) and r.json()["error"]["code"] == "bad_request"
    essay = {"kind": "essay", "prompt": "Write", "options": []}
    check_error(await http.post(f"/v1/episodes/{episode_id}/interactions", json=essay, headers=play.director),
                400, "bad_request")  # unknown enum value
    no_correct = quiz("a") | {"correct": None}
    check_error(await http.post(f"/v1/episodes/{episode_id}/interactions", json=no_correct, headers=play.director),
                400, "bad_request")
    check_error(await http.post("/v1/shows", json={"title": 42}, headers=play.director), 400, "bad_request")
    check_error(await http.get(f"/v1/episodes/{episode_id}/leaderboard?scope=everyone", headers=viewer),
                400, "bad_request")
    check_error(await http.get("/v1/me/notifications?since=garbage", headers=viewer), 400, "bad_request")
    check_error(await http.post("/v1/me/friends", json={"user_id": "u_bad"}, headers=viewer), 400, "bad_request")
    await disguised_texts(play, episode_id)


#: Characters that hide or disguise what a title or name says (protocol.text): NUL, a newline, escape,
#: a C1 control, the right-to-left override, a directional isolate, the line separator.
DISGUISES = ("\x00", "\n", "\x1b[2J", "\x85", "\u202e", "\u2067", "\u2028")


async def disguised_texts(play: Play, episode_id: str) -> None:
    """Every text other people read refuses control and bidirectional override characters with a 400
    that names the field; the same texts without them are accepted (shown by the happy paths)."""
    http = play.http
    show_id = (await http.get(f"/v1/episodes/{episode_id}", headers=play.director)).json()["show_id"]
    for bad in DISGUISES:
        title = f"Quiz{bad}night"
        error = check_error(await http.post("/v1/shows", json={"title": title}, headers=play.director),
                            400, "bad_request")
        assert "control characters" in error["message"] and "$.title" in error["message"], error
        check_error(await http.post(f"/v1/shows/{show_id}/episodes", json={"title": title},
                                    headers=play.director), 400, "bad_request")
        interactions = f"/v1/episodes/{episode_id}/interactions"
        check_error(await http.post(interactions, json=quiz() | {"prompt": f"Who{bad}wins?"},
                                    headers=play.director), 400, "bad_request")
        labelled = quiz() | {"options": [{"id": "a", "label": f"A{bad}"}, {"id": "b", "label": "B"}]}
        check_error(await http.post(interactions, json=labelled, headers=play.director), 400, "bad_request")
        error = check_error(await http.put("/v1/me", json={"name": f"Ann{bad}"}, headers=play.viewer("u_bad")),
                            400, "bad_request")
        assert "$.name" in error["message"], error
    me = await http.get("/v1/me", headers=play.viewer("u_bad"))
    assert not any(bad in me.json()["name"] for bad in DISGUISES)


async def unauthorized(play: Play, interaction_id: str) -> None:
    http = play.http
    answers = f"/v1/interactions/{interaction_id}/answers"
    expired, _ = play.ctx.tickets.issue("u_exp", ttl=1, now=1_000_000.0)
    forged, _ = KeyRing.from_secrets("some-other-secret-0123456789").issue("u_forged", ttl=600)
    queue_token, _ = play.ctx.tickets.issue("q_someone", ttl=600, role="queue")
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Basic dXNlcjpwdw=="},
                    {"Authorization": "Bearer not.a-ticket"}, {"Authorization": f"Bearer {expired}"},
                    {"Authorization": f"Bearer {forged}"}, {"Authorization": f"Bearer {queue_token}"}):
        check_error(await http.post(answers, json={"choice": "a"}, headers=headers), 401, "unauthorized")
    check_error(await http.post("/v1/shows", json={"title": "T"}, headers={"Authorization": "Bearer dk_wrong"}),
                401, "unauthorized")


async def forbidden(play: Play, episode_id: str, interaction_id: str) -> None:
    http, viewer = play.http, play.viewer("u_viewer")
    check_error(await http.post("/v1/shows", json={"title": "Mine"}, headers=viewer), 403, "forbidden")
    check_error(await http.post(f"/v1/interactions/{interaction_id}/close", headers=viewer), 403, "forbidden")
    check_error(await http.post(f"/v1/episodes/{episode_id}/end", headers=viewer), 403, "forbidden")
    check_error(await http.get(f"/v1/episodes/{episode_id}/stats", headers=viewer), 403, "forbidden")
    check_error(await http.get("/v1/me", headers=play.director), 403, "forbidden")  # a director is nobody
    check_error(await http.post(f"/v1/interactions/{interaction_id}/answers", json={"choice": "a"},
                                headers=play.director), 403, "forbidden")


async def not_found(play: Play, episode_id: str) -> None:
    http, viewer = play.http, play.viewer("u_nf")
    check_error(await http.post("/v1/shows/s_nope/episodes", json={"title": "E"}, headers=play.director),
                404, "not_found")
    check_error(await http.get("/v1/episodes/e_nope", headers=viewer), 404, "not_found")
    check_error(await http.post("/v1/episodes/e_nope/interactions", json=quiz(), headers=play.director),
                404, "not_found")
    check_error(await http.get("/v1/interactions/i_nope", headers=viewer), 404, "not_found")
    check_error(await http.post("/v1/interactions/i_nope/answers", json={"choice": "a"}, headers=viewer),
                404, "not_found")
    check_error(await http.get("/v1/interactions/i_nope/results", headers=viewer), 404, "not_found")
    check_error(await http.post("/v1/interactions/i_nope/open", headers=play.director), 404, "not_found")
    check_error(await http.get("/v1/interactions/bad%20id!/results", headers=viewer), 404, "not_found")
    check_error(await http.post("/v1/me/friends", json={"user_id": "u_nobody"}, headers=viewer), 404, "not_found")
    check_error(await http.delete("/v1/me/friends/u_nobody", headers=viewer), 404, "not_found")
    check_error(await http.get("/v1/episodes/e_nope/leaderboard", headers=viewer), 404, "not_found")


async def conflicts(play: Play, episode_id: str, interaction_id: str, draft_id: str) -> None:
    http = play.http
    check_error(await http.post(f"/v1/interactions/{draft_id}/answers", json={"choice": "a"},
                                headers=play.viewer("u_c")), 409, "interaction_closed")
    check_error(await http.post(f"/v1/interactions/{interaction_id}/reveal", headers=play.director),
                409, "invalid_state")  # reveal before close
    check_error(await http.post(f"/v1/interactions/{draft_id}/close", headers=play.director), 409, "invalid_state")
    scheduled = await play.post(f"/v1/shows/{(await play.post('/v1/shows', {'title': 'S2'}, expect=201))['id']}"
                                "/episodes", {"title": "later"}, expect=201)
    not_live = await play.post(f"/v1/episodes/{scheduled['id']}/interactions", quiz(), expect=201)
    check_error(await http.post(f"/v1/interactions/{not_live['id']}/open", headers=play.director),
                409, "invalid_state")  # the episode is not live
    await play.post(f"/v1/episodes/{scheduled['id']}/end")
    check_error(await http.post(f"/v1/episodes/{scheduled['id']}/start", headers=play.director),
                409, "invalid_state")
    check_error(await http.post(f"/v1/episodes/{scheduled['id']}/interactions", json=quiz(), headers=play.director),
                409, "invalid_state")
    # those successful director calls stored one show, one episode, one interaction: undo for the count
    await play.ctx.store.delete(schema.SHOWS, scheduled["show_id"])
    await play.ctx.store.delete(schema.EPISODES, scheduled["id"])
    await play.ctx.store.delete(schema.INTERACTIONS, not_live["id"])


async def invalid_choices(play: Play, interaction_id: str, rating_id: str) -> None:
    http, viewer = play.http, play.viewer("u_ic")
    check_error(await http.post(f"/v1/interactions/{interaction_id}/answers", json={"choice": "z"}, headers=viewer),
                422, "invalid_choice")
    check_error(await http.post(f"/v1/interactions/{interaction_id}/answers", json={"choice": 2}, headers=viewer),
                422, "invalid_choice")
    for choice in (0, 6, "3"):
        check_error(await http.post(f"/v1/interactions/{rating_id}/answers", json={"choice": choice},
                                    headers=viewer), 422, "invalid_choice")


async def test_closed_and_prediction_reveal_errors() -> None:
    with trio.fail_after(TEST_BOUND):
        async with running(None, closer=False) as play:
            episode_id = await play.live_episode()
            prediction = await play.interaction(episode_id, {"kind": "prediction", "prompt": "Who?", "options": [
                {"id": "a", "label": "A"}, {"id": "b", "label": "B"}]})
            await play.post(f"/v1/interactions/{prediction}/close")
            r = await play.http.post(f"/v1/interactions/{prediction}/answers", json={"choice": "a"},
                                     headers=play.viewer("u_after"))
            check_error(r, 409, "interaction_closed")
            check_error(await play.http.post(f"/v1/interactions/{prediction}/reveal", headers=play.director),
                        400, "bad_request")  # a prediction needs its outcome
            check_error(await play.http.post(f"/v1/interactions/{prediction}/reveal", json={"correct": "z"},
                                             headers=play.director), 422, "invalid_choice")
            revealed = await play.post(f"/v1/interactions/{prediction}/reveal", {"correct": "b"})
            assert revealed["correct"] == "b"
            assert await play.ctx.store.count(schema.ANSWERS) == 0


async def test_rate_limited_per_user() -> None:
    with trio.fail_after(TEST_BOUND):
        async with running(None, roles=("core",), closer=False, core_rate_per_second="0.5",
                           core_rate_burst="3") as play:
            episode_id = await play.live_episode()
            # A fresh ticket per request, as a client resuming again and again would collect: one bucket.
            for _ in range(3):
                r = await play.http.get(f"/v1/episodes/{episode_id}", headers=play.viewer("u_fast"))
                assert r.status_code == 200
            r = await play.http.get(f"/v1/episodes/{episode_id}", headers=play.viewer("u_fast"))
            error = check_error(r, 429, "rate_limited")
            assert error["retry_after"] > 0 and int(r.headers["Retry-After"]) >= 1
            # another user, and the director, are not affected
            assert (await play.http.get(f"/v1/episodes/{episode_id}", headers=play.viewer("u_slow"))).status_code == 200
            for _ in range(5):
                assert (await play.http.get(f"/v1/episodes/{episode_id}", headers=play.director)).status_code == 200


async def test_unavailable_when_redis_is_down(redis_server) -> None:
    with trio.fail_after(TEST_BOUND):
        async with running(redis_server.url, roles=("core",), closer=False) as play:
            episode_id = await play.live_episode()
            interaction_id = await play.interaction(episode_id, quiz("a"))
            # warm the cache so the request gets as far as the enqueue
            assert (await play.http.get(f"/v1/interactions/{interaction_id}", headers=play.director)).status_code == 200
            redis_server.close()
            r = await play.http.post(f"/v1/interactions/{interaction_id}/answers", json={"choice": "a"},
                                     headers=play.viewer("u_down"))
            error = check_error(r, 503, "unavailable")
            assert error["retry_after"] > 0 and "Retry-After" in r.headers
            assert await play.ctx.store.count(schema.ANSWERS) == 0
