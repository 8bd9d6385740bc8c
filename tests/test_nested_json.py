"""Deeply nested JSON from a client is malformed input like any other: 400 ``bad_request`` on HTTP, an
``error`` frame on a WebSocket that stays open (docs/architecture.md §6), never a 500 or a dropped connection.

msgspec decodes nesting recursively, so about a thousand levels (two kilobytes) reach the interpreter's
recursion limit; ``protocol.decoding`` turns that into a decode error where every body and frame is
decoded.
"""

from __future__ import annotations

import httpx
import msgspec
import pytest
import trio
from trio_websocket import open_websocket_url

from playtotv.protocol.decoding import JsonDecoder
from playtotv.protocol.rest import SessionRequest
from tests.inprocess import DEFAULTS, start_node

TEST_BOUND = 30.0
#: 1,100 levels, 2.2 KB: past the recursion limit whatever the stack depth of the caller.
LEVELS = 1100
NESTED = b'{"x":' + b"[" * LEVELS + b"]" * LEVELS + b"}"


def test_the_decoder_refuses_deep_nesting_as_a_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError, match="nested too deeply"):
        JsonDecoder(SessionRequest).decode(NESTED)
    assert JsonDecoder(SessionRequest).decode(b'{"x": [[[1]]]}') == SessionRequest()


def check_bad_request(r: httpx.Response, what: str) -> None:
    assert r.status_code == 400, f"{what}: {r.status_code} {r.text[:200]}"
    assert r.json()["error"]["code"] == "bad_request", what


async def test_nested_bodies_are_400_on_every_route_that_decodes_one(nursery: trio.Nursery) -> None:
    node = await start_node(nursery, ["gatekeeper", "core", "push", "worker", "scheduler"])
    director = {"Authorization": f"Bearer {DEFAULTS['auth_director_keys']}"}
    ticket, _ = node.ctx.tickets.issue("u_nested", ttl=600)
    viewer = {"Authorization": f"Bearer {ticket}"}
    json_type = {"Content-Type": "application/json"}
    core = node.url("core")
    with trio.fail_after(TEST_BOUND):
        async with httpx.AsyncClient(timeout=10) as http:
            show = (await http.post(f"{core}/v1/shows", json={"title": "Deep"}, headers=director)).json()
            episode = (await http.post(f"{core}/v1/shows/{show['id']}/episodes",
                                       json={"title": "E", "mode": "live"}, headers=director)).json()
            cases = [
                ("POST", f"{node.url('gatekeeper')}/v1/session", {}),  # no credentials at all
                ("POST", f"{core}/v1/shows", director),
                ("POST", f"{core}/v1/shows/{show['id']}/episodes", director),
                ("POST", f"{core}/v1/episodes/{episode['id']}/interactions", director),
                ("POST", f"{core}/v1/episodes/{episode['id']}/events", director),
                ("POST", f"{core}/v1/interactions/i_any/answers", viewer),
                ("PUT", f"{core}/v1/me", viewer),
                ("POST", f"{core}/v1/me/friends", viewer),
            ]
            for method, url, headers in cases:
                r = await http.request(method, url, content=NESTED, headers={**headers, **json_type})
                check_bad_request(r, f"{method} {url}")
            # The node is unharmed: the same routes still work.
            assert (await http.post(f"{core}/v1/shows", json={"title": "Fine"}, headers=director)).status_code == 201
            assert (await http.post(f"{node.url('gatekeeper')}/v1/session", json={})).status_code == 200


async def test_a_nested_frame_gets_an_error_frame_and_the_connection_stays(nursery: trio.Nursery) -> None:
    node = await start_node(nursery, ["gatekeeper", "core", "push", "worker", "scheduler"])
    ticket, _ = node.ctx.tickets.issue("u_nested_ws", ttl=600)
    with trio.fail_after(TEST_BOUND):
        async with open_websocket_url(f"{node.url('push')}?ticket={ticket}") as ws:
            subscribed = msgspec.json.decode(await ws.get_message())  # its own user channel
            assert subscribed["type"] == "subscribed"
            await ws.send_message(b'{"type": "ping", "x":' + b"[" * LEVELS + b"]" * LEVELS + b"}")
            error = msgspec.json.decode(await ws.get_message())
            assert error["type"] == "error" and error["code"] == "bad_request", error
            await ws.send_message('{"type": "ping"}')
            assert msgspec.json.decode(await ws.get_message())["type"] == "pong"
