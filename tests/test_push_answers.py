"""Answers on the push WebSocket (docs/api.md §5.1): the REST answer's errors, one dedupe key across
both transports, and every accepted answer counted once by the worker."""

from __future__ import annotations

import json
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import httpx
import pytest
import trio
import trio.testing
from trio_websocket import WebSocketConnection, open_websocket_url

from playtotv.gameplay import schema
from playtotv.gameplay.answers import AnswerBatcher
from playtotv.gameplay.cache import announce_invalidation
from playtotv.gameplay.documents import InteractionDoc, to_doc
from playtotv.gameplay.service import Gameplay
from playtotv.gameplay.ratelimit import TokenBuckets
from playtotv.broker.memory import MemoryBroker
from playtotv.client import ClientError, PlayToTVClient
from playtotv.protocol.push import Answer
from playtotv.protocol.rest import Option
from playtotv.roles.push.answers import AnswerDesk, InteractionBook
from playtotv.store import open_store
from playtotv.store.base import StoreUnavailable
from tests.inprocess import start_node
from tests.playkit import Play, quiz, running, wait_until
from tests.pushkit import push_node

BOUND = 20


@asynccontextmanager
async def play(**settings: str) -> AsyncIterator[Play]:
    async with running(None, roles=("core", "worker", "push"), **settings) as p:
        yield p


@asynccontextmanager
async def socket(p: Play, user_id: str) -> AsyncIterator[WebSocketConnection]:
    ticket, _ = p.ctx.tickets.issue(user_id, ttl=600)
    async with open_websocket_url(f"{p.ctx.endpoints['push_ws']}?ticket={ticket}") as ws:
        assert (await recv(ws))["type"] == "subscribed"  # the user channel, unasked
        yield ws


async def recv(ws: WebSocketConnection) -> dict[str, Any]:
    return json.loads(await ws.get_message())


async def answer(ws: WebSocketConnection, request_id: str, interaction_id: Any, choice: Any) -> dict[str, Any]:
    await ws.send_message(json.dumps({"type": "answer", "id": request_id, "interaction_id": interaction_id,
                                      "choice": choice}))
    while (reply := await recv(ws))["type"] == "message":
        pass  # episode messages may come in between
    return reply


async def counted(p: Play, interaction_id: str) -> int:
    await p.drained()
    r = await p.http.get(f"/v1/interactions/{interaction_id}/results", headers=p.director)
    return r.json()["total"]


async def test_an_answer_is_accepted_with_its_id_and_every_api_error_comes_back_with_its_id() -> None:
    with trio.fail_after(BOUND):
        async with play() as p, socket(p, "ann") as ws:
            episode = await p.live_episode()
            open_quiz = await p.interaction(episode, quiz())
            draft = await p.interaction(episode, quiz(), open_it=False)
            rating = await p.interaction(episode, {"kind": "rating", "prompt": "How good?", "scale": [1, 5],
                                                   "duration": 30})
            before = time.time()
            accepted = await answer(ws, "r1", open_quiz, "a")
            assert accepted == {"type": "answer.accepted", "id": "r1", "received_at": accepted["received_at"]}
            assert before <= accepted["received_at"] <= time.time()
            for request_id, interaction_id, choice, code in [
                ("r2", open_quiz, "b", "already_answered"),
                ("r3", draft, "a", "interaction_closed"),
                ("r4", rating, "a", "invalid_choice"),
                ("r5", rating, 9, "invalid_choice"),
                ("r6", "i_unknown", "a", "not_found"),
                ("r7", "no such id!", "a", "not_found"),
                ("r8", open_quiz, True, "bad_request"),  # no choice is a bool
                ("r9", open_quiz, ["a"], "bad_request"),
            ]:
                reply = await answer(ws, request_id, interaction_id, choice)
                assert (reply["type"], reply["code"], reply["id"]) == ("error", code, request_id), reply
            assert (await answer(ws, "r10", rating, 4))["type"] == "answer.accepted"
            # A frame without a readable id still gets its error, and the connection stays.
            for junk in ('{"type":"answer","interaction_id":"x","choice":"a"}', '{"type":"answer","id":5}'):
                await ws.send_message(junk)
                reply = await recv(ws)
                assert reply["type"] == "error" and reply["code"] == "bad_request" and "id" not in reply
            await ws.send_message('{"type":"ping"}')
            assert (await recv(ws))["type"] == "pong"
            assert await counted(p, open_quiz) == 1 and await counted(p, rating) == 1


async def test_the_socket_shares_the_per_user_rate_limit_and_says_when_to_retry() -> None:
    with trio.fail_after(BOUND):
        async with play(core_rate_burst="2", core_rate_per_second="0.01") as p, socket(p, "ann") as ws:
            episode = await p.live_episode()
            quizzes = [await p.interaction(episode, quiz()) for _ in range(3)]
            assert (await answer(ws, "a", quizzes[0], "a"))["type"] == "answer.accepted"
            assert (await answer(ws, "b", quizzes[1], "a"))["type"] == "answer.accepted"
            limited = await answer(ws, "c", quizzes[2], "a")
            assert limited["code"] == "rate_limited" and limited["id"] == "c" and limited["retry_after"] > 0
            # A subscribe is not an answer: the socket itself is not limited.
            await ws.send_message(json.dumps({"type": "subscribe", "channel": f"episode:{episode}"}))
            assert (await recv(ws))["type"] == "subscribed"


async def test_a_retry_over_the_other_transport_is_never_counted_twice() -> None:
    with trio.fail_after(BOUND):
        async with play() as p, socket(p, "ann") as ws:
            episode = await p.live_episode()
            first_ws, first_rest = await p.interaction(episode, quiz()), await p.interaction(episode, quiz())
            # Over the socket, then over REST.
            assert (await answer(ws, "r1", first_ws, "a"))["type"] == "answer.accepted"
            r = await p.http.post(f"/v1/interactions/{first_ws}/answers", json={"choice": "a"}, headers=p.viewer("ann"))
            assert r.status_code == 409 and r.json()["error"]["code"] == "already_answered"
            # Over REST, then over the socket.
            r = await p.http.post(f"/v1/interactions/{first_rest}/answers", json={"choice": "b"},
                                  headers=p.viewer("ann"))
            assert r.status_code == 202
            reply = await answer(ws, "r2", first_rest, "b")
            assert (reply["type"], reply["code"]) == ("error", "already_answered")
            assert await counted(p, first_ws) == 1 and await counted(p, first_rest) == 1


async def test_answers_from_many_sockets_are_counted_exactly_once_by_the_worker() -> None:
    with trio.fail_after(BOUND):
        async with play() as p:
            episode = await p.live_episode()
            quiz_id = await p.interaction(episode, quiz())
            replies: dict[str, list[str]] = {}

            async def viewer(n: int) -> None:
                async with socket(p, f"v{n}") as ws:
                    # Each viewer sends its answer twice at once (a retry): one is accepted.
                    for attempt in ("first", "retry"):
                        await ws.send_message(json.dumps({"type": "answer", "id": attempt, "interaction_id": quiz_id,
                                                          "choice": "abc"[n % 3]}))
                    replies[f"v{n}"] = [(await recv(ws)).get("code", "accepted") for _ in range(2)]

            async with trio.open_nursery() as nursery:
                for n in range(40):
                    nursery.start_soon(viewer, n)
            assert all(sorted(r) == ["accepted", "already_answered"] for r in replies.values()), replies
            assert await counted(p, quiz_id) == 40


async def test_the_node_learns_opens_and_closes_from_the_episode_channel() -> None:
    """An interaction announced on a followed channel is validated without a store read, and its close
    is refused at once, before any cache could expire."""
    with trio.fail_after(BOUND):
        async with play() as p, socket(p, "ann") as ws:
            episode = await p.live_episode()
            earlier = await p.interaction(episode, quiz())  # opened before the node followed the channel
            await ws.send_message(json.dumps({"type": "subscribe", "channel": f"episode:{episode}"}))
            assert (await recv(ws))["type"] == "subscribed"
            book = p.ctx.push.answers.book
            first = await p.interaction(episode, quiz())
            second = await p.interaction(episode, quiz())
            await wait_until(lambda: _known(book, second))
            assert (await answer(ws, "r1", first, "a"))["type"] == "answer.accepted"
            for closing in (second, earlier):  # one seen opening, one known only by its close
                await p.post(f"/v1/interactions/{closing}/close")
                await wait_until(lambda: _closed(book, closing))
                assert (await answer(ws, f"r-{closing}", closing, "a"))["code"] == "interaction_closed"
            assert book.loads == 0


async def _known(book: InteractionBook, interaction_id: str) -> bool:
    return interaction_id in book._learned


async def _closed(book: InteractionBook, interaction_id: str) -> bool:
    known = book._learned.get(interaction_id)
    return known is not None and (known[0] is None or known[0].status == "closed")


async def test_answers_are_unavailable_while_they_cannot_be_recorded() -> None:
    """The store down, or the batcher not running (the node stopping): ``unavailable``, with a retry time."""
    now = time.time()
    doc = InteractionDoc(id="i1", episode_id="e1", kind="quiz", prompt="?", options=[Option(id="a", label="A")],
                         duration=30, points=10, status="open", opens_at=now, closes_at=now + 30)
    store_up = False

    async def load(interaction_id: str) -> InteractionDoc:
        if not store_up:
            raise StoreUnavailable("down")
        return doc

    async with open_store("sqlite:///:memory:") as store:
        desk = AnswerDesk(InteractionBook(dict, load), AnswerBatcher(MemoryBroker(), store), TokenBuckets(10, 20))
        for request_id in ("r1", "r2"):
            reply = json.loads(await desk.answer("u1", Answer(id=request_id, interaction_id="i1", choice="a")))
            assert reply["code"] == "unavailable" and reply["id"] == request_id and reply["retry_after"] > 0
            store_up = True
        # A choice refused before the batcher is asked is still refused as such.
        reply = json.loads(await desk.answer("u1", Answer(id="r3", interaction_id="i1", choice="z")))
        assert reply["code"] == "invalid_choice"


# -- the Python SDK ----------------------------------------------------------------------------------------

DIRECTOR = {"Authorization": "Bearer director-key-0123456789"}  # tests/inprocess.py's default key


async def _live_quizzes(core: str, count: int) -> tuple[str, list[str]]:
    async with httpx.AsyncClient(base_url=core, headers=DIRECTOR) as http:
        show = (await http.post("/v1/shows", json={"title": "S"})).json()
        episode = (await http.post(f"/v1/shows/{show['id']}/episodes", json={"title": "E", "mode": "live"})).json()
        await http.post(f"/v1/episodes/{episode['id']}/start", json={})
        quizzes = []
        for _ in range(count):
            created = (await http.post(f"/v1/episodes/{episode['id']}/interactions", json=quiz())).json()
            await http.post(f"/v1/interactions/{created['id']}/open", json={})
            quizzes.append(created["id"])
        return episode["id"], quizzes


async def test_the_sdk_answers_on_its_websocket_and_falls_back_to_rest_without_counting_twice(nursery) -> None:
    node = await start_node(nursery, ["gatekeeper", "core", "push", "worker"])
    episode, (on_socket, lost_reply, after_stream) = await _live_quizzes(node.url("core"), 3)
    async with PlayToTVClient(node.url("gatekeeper")) as client:
        await client.join()
        with trio.fail_after(BOUND):
            async with client.push([f"episode:{episode}"]) as stream:
                while not stream.websocket_open:
                    await trio.sleep(0.01)
                accepted = await client.answer(on_socket, "a")
                assert accepted["accepted"] is True and accepted["received_at"] > 0
                with pytest.raises(ClientError) as refused:
                    await client.answer(on_socket, "b")
                assert (refused.value.status, refused.value.code) == (409, "already_answered")
                with pytest.raises(ClientError) as invalid:
                    await client.answer(lost_reply, "z")
                assert (invalid.value.status, invalid.value.code) == (422, "invalid_choice")
                assert client.answers_by_transport == {"websocket": 1, "rest": 0}

                # The frame goes out but its reply is lost: the REST retry finds it already answered.
                send_answer = stream.send_answer

                async def reply_lost(*args: Any) -> None:
                    await send_answer(*args)

                stream.send_answer = reply_lost  # type: ignore[method-assign]
                assert await client.answer(lost_reply, "a") == {"accepted": True, "duplicate": True}
            # No stream: REST.
            assert (await client.answer(after_stream, "a"))["accepted"] is True
            assert client.answers_by_transport == {"websocket": 1, "rest": 1}
            async with httpx.AsyncClient(base_url=node.url("core"), headers=DIRECTOR) as http:
                async def totals() -> list[int]:
                    return [(await http.get(f"/v1/interactions/{q}/results")).json()["total"]
                            for q in (on_socket, lost_reply, after_stream)]

                while await totals() != [1, 1, 1]:
                    await trio.sleep(0.05)


async def test_a_push_only_node_hears_of_a_close_on_a_channel_it_does_not_follow() -> None:
    """Read from the store and cached, as core caches it; the close comes as a cache invalidation."""
    with trio.fail_after(BOUND):
        async with push_node() as node:
            now = time.time()
            doc = InteractionDoc(id="i_1", episode_id="E1", kind="quiz", prompt="?", options=[Option(id="a", label="A")],
                                 duration=60, points=10, status="open", opens_at=now, closes_at=now + 60)
            await node.ctx.store.insert(schema.INTERACTIONS, to_doc(doc))
            async with open_websocket_url(node.ws_url("ann")) as ann, open_websocket_url(node.ws_url("bob")) as bob:
                for ws in (ann, bob):
                    assert (await recv(ws))["type"] == "subscribed"
                assert (await answer(ann, "r1", "i_1", "a"))["type"] == "answer.accepted"
                await node.ctx.store.update(schema.INTERACTIONS, "i_1", set={"status": "closed"})
                await announce_invalidation(node.ctx.broker, "interaction", ["i_1"])
                await trio.testing.wait_all_tasks_blocked()  # the invalidation delivered and applied
                assert await _uncached(node, "i_1")  # at once, not after the cache's TTL
                assert (await answer(bob, "r2", "i_1", "a"))["code"] == "interaction_closed"


async def _uncached(node: Any, interaction_id: str) -> bool:
    return not Gameplay.of(node.ctx).caches.interactions.get(interaction_id)[0]
