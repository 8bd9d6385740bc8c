"""A whole episode end to end through HTTP, on the embedded backends and on Redis.

Create, start, open, 100 viewers answer (duplicates and bad choices refused), close, reveal: exact
results, a leaderboard that matches docs/api.md's formula computed here independently, achievements and
notifications, friends' views. The same test runs against the memory broker and a real Redis.
"""

from __future__ import annotations

import pytest
import trio

from tests.playkit import Play, quiz, running

VIEWERS = 100
#: Concurrent HTTP requests of the simulated audience.
CONCURRENCY = 20
TEST_BOUND = 60.0


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.slow)])
def backend(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


def user(i: int) -> str:
    return f"u{i:03d}"


def expected_award(points: int, duration: float, elapsed: float, streak: int) -> int:
    """docs/api.md's formula, written out again here rather than imported, so the test checks the code."""
    elapsed = min(max(elapsed, 0.0), duration)
    base = points if elapsed <= 0.5 else points * (1 - elapsed / (2 * duration))
    bonus = min(0.1 * (streak - 1), 0.5) if streak >= 2 else 0.0
    return round(base * (1 + bonus))


async def answer_all(play: Play, interaction_id: str, choices: dict[str, object]) -> dict[str, float]:
    """Every viewer answers once (concurrently); returns received_at per user."""
    received: dict[str, float] = {}
    limiter = trio.CapacityLimiter(CONCURRENCY)

    async def one(user_id: str, choice: object) -> None:
        async with limiter:
            r = await play.http.post(f"/v1/interactions/{interaction_id}/answers", json={"choice": choice},
                                     headers=play.viewer(user_id))
            assert r.status_code == 202, r.text
            assert r.json()["accepted"] is True
            received[user_id] = r.json()["received_at"]

    async with trio.open_nursery() as nursery:
        for user_id, choice in choices.items():
            nursery.start_soon(one, user_id, choice)
    return received


@pytest.mark.slow  # end to end: a whole node and a hundred viewers over HTTP, on both backends
async def test_whole_episode(backend: str | None, tmp_path) -> None:
    with trio.fail_after(TEST_BOUND):
        async with running(backend, store_url=f"sqlite:///{tmp_path}/play.db") as play:
            await run_episode(play)


async def run_episode(play: Play) -> None:
    http = play.http
    episode_id = await play.live_episode()
    episode = (await http.get(f"/v1/episodes/{episode_id}", headers=play.viewer(user(0)))).json()
    assert episode["status"] == "live" and episode["channel"] == f"episode:{episode_id}"

    # Friends: u000 follows u001 and u002; u003 follows u000.
    for follower, followee in ((0, 1), (0, 2), (3, 0)):
        r = await http.post("/v1/me/friends", json={"user_id": user(followee)}, headers=play.viewer(user(follower)))
        assert r.status_code == 404  # nobody has played yet: unknown users
    for i in range(4):
        assert (await http.get("/v1/me", headers=play.viewer(user(i)))).status_code == 200
    for follower, followee in ((0, 1), (0, 2), (3, 0)):
        r = await http.post("/v1/me/friends", json={"user_id": user(followee)}, headers=play.viewer(user(follower)))
        assert r.status_code == 201, r.text
    listed = (await http.get("/v1/me/friends", headers=play.viewer(user(0)))).json()
    assert [f["user_id"] for f in listed["friends"]] == [user(1), user(2)]

    # Three quizzes; viewers with i % 4 == 3 are always wrong, the others always right.
    awarded: dict[str, int] = {user(i): 0 for i in range(VIEWERS)}
    streaks: dict[str, int] = {user(i): 0 for i in range(VIEWERS)}
    for round_number, correct in enumerate(("a", "b", "a")):
        wrong = "c"
        interaction_id = await play.interaction(episode_id, quiz(correct, duration=30))
        opened = (await http.get(f"/v1/interactions/{interaction_id}", headers=play.viewer(user(0)))).json()
        assert opened["status"] == "open" and "correct" not in opened  # not before reveal
        choices = {user(i): (wrong if i % 4 == 3 else correct) for i in range(VIEWERS)}
        received = await answer_all(play, interaction_id, choices)

        if round_number == 0:
            await refused_answers(play, interaction_id)
        await play.post(f"/v1/interactions/{interaction_id}/close")
        await play.drained()
        revealed = await play.post(f"/v1/interactions/{interaction_id}/reveal")
        assert revealed["status"] == "revealed" and revealed["correct"] == correct
        await play.drained()

        results = (await http.get(f"/v1/interactions/{interaction_id}/results", headers=play.viewer(user(5)))).json()
        assert results == {"total": VIEWERS, "counts": {correct: 75, wrong: 25, "b" if correct == "a" else "a": 0},
                           "percent": {correct: 75.0, wrong: 25.0, "b" if correct == "a" else "a": 0.0},
                           "correct": correct}
        for user_id, choice in choices.items():
            if choice == correct:
                streaks[user_id] += 1
                awarded[user_id] += expected_award(1000, 30, received[user_id] - opened["opens_at"], streaks[user_id])
            else:
                streaks[user_id] = 0
        if round_number == 0:
            friends_view = (await http.get(f"/v1/interactions/{interaction_id}/friends",
                                           headers=play.viewer(user(0)))).json()
            assert {(f["user_id"], f["choice"]) for f in friends_view["friends"]} == {(user(1), "a"), (user(2), "a")}

    # A poll and a rating score nothing; results are exact.
    poll = await play.interaction(episode_id, {"kind": "poll", "prompt": "Best?", "options": [
        {"id": "x", "label": "X"}, {"id": "y", "label": "Y"}]})
    await answer_all(play, poll, {user(i): ("x" if i < 60 else "y") for i in range(VIEWERS)})
    rating = await play.interaction(episode_id, {"kind": "rating", "prompt": "Rate it", "scale": [1, 5]})
    await answer_all(play, rating, {user(i): (i % 5) + 1 for i in range(VIEWERS)})
    await play.drained()
    poll_results = (await http.get(f"/v1/interactions/{poll}/results", headers=play.director)).json()
    assert poll_results["counts"] == {"x": 60, "y": 40} and poll_results["correct"] is None
    rating_results = (await http.get(f"/v1/interactions/{rating}/results", headers=play.director)).json()
    assert rating_results["counts"] == {str(v): 20 for v in range(1, 6)} and rating_results["average"] == 3.0

    # The leaderboard matches the formula for everyone.
    board = (await http.get(f"/v1/episodes/{episode_id}/leaderboard?limit=100", headers=play.viewer(user(0)))).json()
    assert {e["user_id"]: e["score"] for e in board["entries"]} == awarded
    assert [e["rank"] for e in board["entries"]] == list(range(1, VIEWERS + 1))
    scores = [e["score"] for e in board["entries"]]
    assert scores == sorted(scores, reverse=True)
    me = board["me"]
    assert me["score"] == awarded[user(0)] and board["entries"][me["rank"] - 1]["user_id"] == user(0)
    friends_board = (await http.get(f"/v1/episodes/{episode_id}/leaderboard?scope=friends",
                                    headers=play.viewer(user(0)))).json()
    assert sorted(e["user_id"] for e in friends_board["entries"]) == [user(0), user(1), user(2)]

    await play.post(f"/v1/episodes/{episode_id}/end")
    await play.drained()
    top10 = {e["user_id"] for e in board["entries"][:10]}
    await check_profiles(play, awarded, top10)
    await check_notifications(play)


async def refused_answers(play: Play, interaction_id: str) -> None:
    http = play.http
    for i in range(10):  # a retry after a timeout: never a second answer
        r = await http.post(f"/v1/interactions/{interaction_id}/answers", json={"choice": "b"},
                            headers=play.viewer(user(i)))
        assert r.status_code == 409 and r.json()["error"]["code"] == "already_answered"
    r = await http.post(f"/v1/interactions/{interaction_id}/answers", json={"choice": "z"},
                        headers=play.viewer("u_late"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_choice"


async def check_profiles(play: Play, awarded: dict[str, int], top10: set[str]) -> None:
    for i in (0, 3):
        me = (await play.http.get("/v1/me", headers=play.viewer(user(i)))).json()
        earned = {a["id"] for a in me["achievements"]}
        assert me["score"] == me["lifetime_points"] == awarded[user(i)]
        assert "first_answer" in earned
        if i % 4 != 3:
            assert {"streak_3", "perfect_episode"} <= earned
            assert me["tier"] == "bronze" and me["correct_answers"] == 3
        else:
            assert not {"streak_3", "perfect_episode"} & earned and me["tier"] == "newcomer"
        assert ("top_10" in earned) == (user(i) in top10)
        assert me["answers"] == 5


async def check_notifications(play: Play) -> None:
    first = (await play.http.get("/v1/me/notifications", headers=play.viewer(user(0)))).json()
    kinds = {(n["kind"], (n.get("achievement") or {}).get("id")) for n in first["notifications"]}
    assert {("achievement", "first_answer"), ("achievement", "streak_3"), ("achievement", "perfect_episode")} <= kinds
    again = (await play.http.get(f"/v1/me/notifications?since={first['cursor']}", headers=play.viewer(user(0)))).json()
    assert again["notifications"] == []
    # u003 follows u000: it heard that u000 is playing along (rate limited, so only the first of each kind).
    fan = (await play.http.get("/v1/me/notifications", headers=play.viewer(user(3)))).json()
    about_friend = [n for n in fan["notifications"] if n.get("user_id") == user(0)]
    assert {n["kind"] for n in about_friend} >= {"friend_joined"}
    assert sum(1 for n in about_friend if n["kind"] == "friend_joined") == 1
