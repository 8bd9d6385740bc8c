"""The push role's WebSocket, black-box: tickets, channels, authorisation, limits, timeouts, recovery,
slow consumers, drain (docs/api.md §5; docs/reliability.md #1, #2, #4, #5)."""

from __future__ import annotations

import msgspec
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, open_websocket_url
from wsproto.events import CloseConnection, Ping, TextMessage

from playtotv.roles.push import connection
from tests.pushkit import BareWebSocket, client, push_node, recv, subscribe

BOUND = 10.0
EVENT = {"type": "director.event", "event_type": "cheer", "data": {}}


def data(n: int) -> dict:
    return {"type": "director.event", "event_type": "n", "data": {"n": n}}


async def test_a_bad_ticket_is_refused_on_the_upgrade_with_401() -> None:
    with trio.fail_after(BOUND):
        async with push_node() as node:
            base = node.ctx.endpoints["push_ws"]
            for url in (f"{base}?ticket=forged.ticket", base):
                with pytest.raises(ConnectionRejected) as rejected:
                    async with open_websocket_url(url):
                        pass
                assert rejected.value.status_code == 401
                assert b"unauthorized" in rejected.value.body
            expired, _ = node.ctx.tickets.issue("u1", ttl=1, now=1.0)
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(f"{base}?ticket={expired}"):
                    pass
            assert rejected.value.status_code == 401
            assert node.hub.channels == {}  # nobody got a subscription


async def test_malformed_upgrade_requests_get_an_http_error_and_the_node_carries_on() -> None:
    from tests.pushkit import _host_port

    with trio.fail_after(BOUND):
        async with push_node() as node:
            host, port = _host_port(node.ctx.endpoints["push_ws"])
            requests = {
                b"GET /v1/ws?" + b"&".join(b"f%d=1" % i for i in range(50)) + b" HTTP/1.1\r\nHost: x\r\n"
                b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: a2V5a2V5a2V5a2V5a2V5aw==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n": b"400",
                b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n\r\n": b"400",  # plain HTTP, no upgrade
                b"POST /v1/ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n": b"400",
                b"\x16\x03\x01 garbage, maybe TLS\r\n\r\n": b"400",
            }
            for request, status in requests.items():
                stream = await trio.open_tcp_stream(host, port)
                await stream.send_all(request)
                answer = b""
                while chunk := await stream.receive_some(4096):
                    answer += chunk
                assert answer.split(b" ")[1] == status, (request, answer[:80])
                await stream.aclose()
            async with client(node) as ws:  # still serving
                await ws.send_message('{"type":"ping"}')
                assert (await recv(ws))["type"] == "pong"


async def test_another_path_is_404() -> None:
    with trio.fail_after(BOUND):
        async with push_node() as node:
            url = node.ws_url("u1").replace("/v1/ws", "/v1/other")
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(url):
                    pass
            assert rejected.value.status_code == 404


async def test_own_user_channel_is_automatic_and_episode_channels_on_request() -> None:
    with trio.fail_after(BOUND):
        async with push_node() as node, client(node, "ann") as ws:
            reply = await subscribe(ws, "episode:E1")
            assert reply["recovered"] is True and reply["missed"] == [] and reply["offset"] == 0
            published = await node.publish("episode:E1", EVENT)
            message = await recv(ws)
            assert message == {
                "type": "message", "channel": "episode:E1", "epoch": published.epoch, "offset": 1,
                "sent_at": published.sent_at, "data": EVENT,
            }
            await node.publish("user:ann", {"type": "score.updated", "interaction_id": "i1", "points": 5, "total": 5})
            message = await recv(ws)
            assert message["channel"] == "user:ann" and message["data"]["points"] == 5

            await ws.send_message('{"type":"ping"}')
            assert (await recv(ws))["type"] == "pong"

            await ws.send_message('{"type":"unsubscribe","channel":"episode:E1"}')
            await node.publish("episode:E1", EVENT)
            await node.publish("user:ann", {"type": "score.updated", "interaction_id": "i2", "points": 1, "total": 6})
            assert (await recv(ws))["channel"] == "user:ann"  # the episode message did not come


async def test_another_users_channel_is_refused_and_the_connection_stays() -> None:
    with trio.fail_after(BOUND):
        async with push_node() as node, client(node, "ann") as ws:
            for channel in ("user:bob", "admin:all"):
                await ws.send_message(msgspec.json.encode({"type": "subscribe", "channel": channel}).decode())
                error = await recv(ws)
                assert error["type"] == "error" and error["code"] == "forbidden"
            await node.publish("user:bob", EVENT)
            await ws.send_message('{"type":"ping"}')
            assert (await recv(ws))["type"] == "pong"  # still connected, and bob's message never came
            assert node.hub.channels.get("user:bob") is None


async def test_garbage_json_gets_an_error_frame_and_the_connection_stays() -> None:
    with trio.fail_after(BOUND):
        async with push_node() as node, client(node) as ws:
            for junk in ("not json", '{"type":"nope"}', '{"type":"subscribe"}', "[1,2]", "x" * 5000):
                await ws.send_message(junk)
                reply = await recv(ws)
                assert reply["type"] == "error" and reply["code"] == "bad_request", junk
            await ws.send_message(b'{"type":"ping"}')  # binary frames carry JSON too
            assert (await recv(ws))["type"] == "pong"


async def test_an_oversized_message_closes_the_connection_and_others_are_unaffected() -> None:
    with trio.fail_after(BOUND):
        async with push_node(push_max_frame_bytes="1024") as node, client(node, "a") as big, client(node, "b") as ok:
            await big.send_message("x" * 2000)
            with pytest.raises(ConnectionClosed) as closed:
                await big.get_message()
            assert closed.value.reason.code == 1009
            await ok.send_message('{"type":"ping"}')
            assert (await recv(ok))["type"] == "pong"


async def test_protocol_garbage_closes_only_that_connection() -> None:
    with trio.fail_after(BOUND):
        async with push_node() as node, client(node, "ok") as ok:
            raw = await BareWebSocket.connect(node)
            await raw.stream.send_all(b"\xff\x00 this is not a websocket frame")
            events: list = []
            while not any(isinstance(e, CloseConnection) for e in events):
                events += await raw.events()
            await raw.aclose()
            await ok.send_message('{"type":"ping"}')
            assert (await recv(ok))["type"] == "pong"


async def test_slowloris_handshake_is_cut_off_after_the_handshake_timeout() -> None:
    with trio.fail_after(BOUND):
        async with push_node(push_handshake_timeout="0.3") as node:
            from tests.pushkit import _host_port

            host, port = _host_port(node.ctx.endpoints["push_ws"])
            stream = await trio.open_tcp_stream(host, port)
            await stream.send_all(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n")  # ... and never the rest
            started = trio.current_time()
            assert await stream.receive_some(1024) == b""  # the server hung up
            assert trio.current_time() - started < 5
            await stream.aclose()


async def test_a_silent_client_is_pinged_then_closed_when_idle() -> None:
    with trio.fail_after(BOUND):
        async with push_node(push_keepalive_interval="0.1", push_idle_timeout="0.5") as node:
            raw = await BareWebSocket.connect(node)
            pings = 0
            closed = None
            while closed is None:
                for e in await raw.events():
                    if isinstance(e, Ping):
                        pings += 1  # never answered
                    elif isinstance(e, CloseConnection):
                        closed = e
            assert pings >= 1 and closed.code == 1001
            await raw.aclose()


async def test_a_client_answering_pings_outlives_the_idle_timeout() -> None:
    with trio.fail_after(BOUND):
        async with push_node(push_keepalive_interval="0.1", push_idle_timeout="0.3") as node:
            raw = await BareWebSocket.connect(node)
            pings = 0
            while pings < 8:  # 8 keepalives = well past the idle timeout
                for e in await raw.events():
                    assert not isinstance(e, CloseConnection), e
                    if isinstance(e, Ping):
                        pings += 1
                        await raw.stream.send_all(raw.ws.send(e.response()))
            await raw.aclose()


async def test_a_client_trickling_an_unfinished_frame_is_still_idle() -> None:
    """Only complete frames count as heard: bytes of a frame that never ends do not hold the connection."""
    with trio.fail_after(BOUND):
        async with push_node(push_keepalive_interval="60", push_idle_timeout="0.5") as node:
            raw = await BareWebSocket.connect(node)
            frame = raw.ws.send(TextMessage(data="x" * 100))  # a masked text frame, sent a byte at a time
            started = trio.current_time()
            closed = None
            async with trio.open_nursery() as nursery:
                async def trickle() -> None:
                    for byte in frame[:-1]:
                        await raw.stream.send_all(bytes([byte]))
                        await trio.sleep(0.05)

                nursery.start_soon(trickle)
                while closed is None:
                    closed = next((e for e in await raw.events() if isinstance(e, CloseConnection)), None)
                nursery.cancel_scope.cancel()
            assert closed.code == 1001 and trio.current_time() - started < 3
            await raw.aclose()


async def test_a_client_that_never_answers_our_close_frame_is_hung_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "CLOSE_HANDSHAKE_SECONDS", 0.3)  # the wait this test is about, made short
    with trio.fail_after(BOUND):
        async with push_node(push_keepalive_interval="60", push_idle_timeout="0.3") as node:
            raw = await BareWebSocket.connect(node)
            closed = None
            while closed is None:
                closed = next((e for e in await raw.events() if isinstance(e, CloseConnection)), None)
            assert closed.code == 1001
            asked = trio.current_time()
            assert await raw.stream.receive_some(1024) == b""  # never answered: the server hangs up
            assert trio.current_time() - asked < 5  # CLOSE_HANDSHAKE_SECONDS and a margin
            await raw.aclose()


# -- recovery (docs/reliability.md #1, #2) ---------------------------------------------------------------------

async def _received(ws, n: int) -> list[dict]:
    return [await recv(ws) for _ in range(n)]


@pytest.mark.parametrize("linger", ["5", "0"], ids=["from-memory", "from-history"])
async def test_reconnect_with_position_replays_what_was_missed_in_order(linger: str) -> None:
    with trio.fail_after(BOUND):
        async with push_node(push_channel_linger=linger) as node:
            async with client(node) as ws:
                await subscribe(ws, "episode:E1")
                for i in range(3):
                    await node.publish("episode:E1", data(i))
                seen = await _received(ws, 3)
            last = seen[-1]
            if linger == "0":
                while "episode:E1" in node.hub.channels:  # released: recovery must read broker history
                    await trio.testing.wait_all_tasks_blocked()
            for i in range(3, 7):
                await node.publish("episode:E1", data(i))
            async with client(node) as ws:
                reply = await subscribe(ws, "episode:E1", {"epoch": last["epoch"], "offset": last["offset"]})
                assert reply["recovered"] is True and reply["offset"] == 7
                assert [m["offset"] for m in reply["missed"]] == [4, 5, 6, 7]
                assert [m["data"]["data"]["n"] for m in reply["missed"]] == [3, 4, 5, 6]
                await node.publish("episode:E1", data(7))
                assert (await recv(ws))["offset"] == 8  # and live again, no gap, no duplicate


async def test_positions_that_cannot_be_filled_say_recovered_false() -> None:
    with trio.fail_after(BOUND):
        async with push_node(push_recovery_limit="5") as node, client(node) as ws:
            await subscribe(ws, "episode:E1")
            for i in range(10):
                await node.publish("episode:E1", data(i))
            messages = await _received(ws, 10)
            epoch = messages[0]["epoch"]
            await node.broker.trim_history("episode:E1", 2)
            cases = {
                "beyond the recovery cap": {"epoch": epoch, "offset": 1},
                "ahead of the stream": {"epoch": epoch, "offset": 99},
                "another epoch": {"epoch": "old-epoch", "offset": 9},
                "malformed": {"epoch": 5, "offset": -1},
            }
            for name, since in cases.items():
                reply = await subscribe(ws, "episode:E1", since)
                assert reply["recovered"] is False, name
                assert (reply["epoch"], reply["offset"], reply["missed"]) == (epoch, 10, []), name
            reply = await subscribe(ws, "episode:E1", {"epoch": epoch, "offset": 7})
            assert reply["recovered"] is True and [m["offset"] for m in reply["missed"]] == [8, 9, 10]


async def test_trimmed_history_says_recovered_false() -> None:
    with trio.fail_after(BOUND):
        async with push_node(push_channel_linger="0") as node:
            for i in range(10):
                await node.publish("episode:E2", data(i))
            await node.broker.trim_history("episode:E2", 3)
            async with client(node) as ws:
                reply = await subscribe(ws, "episode:E2", {"epoch": (await node.broker.position("episode:E2"))[0],
                                                           "offset": 2})
                assert reply["recovered"] is False and reply["offset"] == 10


# -- slow consumers (docs/reliability.md #4) ------------------------------------------------------------------------

async def test_a_client_that_stops_reading_is_dropped_and_the_others_get_everything() -> None:
    with trio.fail_after(BOUND * 2):
        async with push_node(push_max_outbox_bytes="65536") as node:
            slow = await BareWebSocket.connect(node, "slow", rcvbuf=4096)
            await slow.stream.send_all(slow.ws.send(TextMessage('{"type":"subscribe","channel":"episode:E1"}')))
            async with client(node, "fast") as fast:
                await subscribe(fast, "episode:E1")
                big = {"type": "director.event", "event_type": "blob", "data": {"x": "y" * 16384}}
                count = 200  # ~3 MiB: far more than the slow client's socket buffers and outbox hold
                for offset in range(1, count + 1):
                    # In step with the fast client: it keeps up, the slow one falls behind and overflows.
                    await node.publish("episode:E1", big)
                    assert (await recv(fast))["offset"] == offset
            assert node.ctx.metrics.registry.get_sample_value("playtotv_slow_clients_dropped_total") == 1
            # The slow client now reads: whatever was on the wire, then the end of the connection.
            events: list = []
            while not any(isinstance(e, CloseConnection) for e in events):
                events += await slow.events()
            await slow.aclose()
            assert "episode:E1" in node.hub.channels and len(node.hub.channels["episode:E1"].subscribers) == 0


# -- drain ---------------------------------------------------------------------------------------------------

async def test_drain_tells_every_client_to_reconnect_then_closes() -> None:
    with trio.fail_after(BOUND):
        async with push_node(node_drain_seconds="2") as node, client(node, "a") as a, client(node, "b") as b:
            node.ctx.draining.set()
            for ws in (a, b):
                reconnect = await recv(ws)
                assert reconnect["type"] == "reconnect" and 0 <= reconnect["after"] <= 5
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason.code == 1001
            with pytest.raises(HandshakeError):  # the listener is closed: new clients go elsewhere
                async with open_websocket_url(node.ws_url("late")):
                    pass


async def test_load_and_fanout_delay_are_reported_for_the_heartbeat() -> None:
    with trio.fail_after(BOUND):
        async with push_node() as node, client(node) as ws:
            await subscribe(ws, "episode:E1")
            await node.publish("episode:E1", EVENT)
            await recv(ws)
            node.runtime.report()
            assert node.ctx.load["connections"] == 1
            assert node.ctx.qos["fanout_p99_ms"] >= 0
            assert node.ctx.endpoints["push_ws"].endswith("/v1/ws")
            assert node.ctx.endpoints["push_poll"].endswith("/v1/poll")
            info = (await node.ctx.registry.nodes())[0]
            assert info.endpoints == node.ctx.endpoints


async def test_a_gatekeeper_queue_token_is_not_a_ticket() -> None:
    """The ``queue`` token of a 503 at_capacity answer is signed like a ticket but made for the waiting
    room: push refuses it (401) before any subscription."""
    with trio.fail_after(BOUND):
        async with push_node() as node:
            queue_token, _ = node.ctx.tickets.issue("q_refused", ttl=600, role="queue")
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(f"{node.ctx.endpoints['push_ws']}?ticket={queue_token}"):
                    pass
            assert rejected.value.status_code == 401 and b"unauthorized" in rejected.value.body
            assert node.hub.channels == {}
