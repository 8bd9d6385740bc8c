"""The gatekeeper through its HTTP API, in a real node: admission, capacity, tickets, endpoint lists."""

from __future__ import annotations

import time

import httpx
import trio

from playtotv.credentials import KeyRing
from playtotv.registry.base import NodeInfo
from playtotv.roles import gatekeeper as gatekeeper_role
from playtotv.roles.gatekeeper.capacity import RESUME_AFTER
from tests.inprocess import start_node


def core_node(i: int, **qos: float) -> NodeInfo:
    return NodeInfo(id=f"core-{i}", roles=["core"], endpoints={"core": f"http://10.9.0.{i}:8001"}, qos=qos)


def push_node(i: int, connections: int = 0) -> NodeInfo:
    return NodeInfo(
        id=f"push-{i}", roles=["push"],
        endpoints={"push_ws": f"ws://10.9.1.{i}:8002/v1/ws", "push_poll": f"http://10.9.1.{i}:8003/v1/poll"},
        load={"connections": connections, "max_connections": 1000},
    )


async def gatekeeper(nursery, nodes: list[NodeInfo], **settings: str):
    node = await start_node(nursery, ["gatekeeper"], **settings)
    for n in nodes:
        await node.ctx.registry.heartbeat(n, ttl=60)
    node.ctx.gatekeeper._apply(await node.ctx.registry.nodes(), time.time())
    return node, httpx.AsyncClient(base_url=node.url("gatekeeper"), timeout=5)


async def test_admission_returns_a_valid_ticket_and_ordered_live_lists(nursery):
    node, http = await gatekeeper(nursery, [core_node(1), core_node(2), push_node(1), push_node(2)])
    async with http:
        r = await http.post("/v1/session", json={"name": "Ann", "transports": ["websocket"]})
        assert r.status_code == 200, r.text
        body = r.json()
        ticket = node.ctx.tickets.verify(body["ticket"])
        assert ticket.user_id == body["user_id"] and body["user_id"].startswith("u_")
        assert abs(body["expires_at"] - ticket.expires_at) < 1e-6
        assert sorted(body["core"]) == ["http://10.9.0.1:8001", "http://10.9.0.2:8001"]
        assert len(body["push"]) == 2 and all("polling" not in p for p in body["push"])
        assert body["max_rtt_ms"] == 800
        # the same user keeps the same core order (rendezvous hashing → its cache)
        again = await http.post("/v1/session", json={"resume": body["ticket"]})
        assert again.json()["user_id"] == body["user_id"]
        assert again.json()["core"] == body["core"]
        assert (await http.post("/v1/session")).status_code == 200  # an empty body is a valid request


async def test_resume_and_user_id_trust(nursery):
    node, http = await gatekeeper(nursery, [core_node(1), push_node(1)])
    async with http:
        forged_ring = KeyRing.from_secrets("another-secret")
        forged, _ = forged_ring.issue("u_victim", ttl=60)
        r = await http.post("/v1/session", json={"resume": forged, "user_id": "u_victim"})
        assert r.status_code == 200 and r.json()["user_id"] != "u_victim"
        expired, _ = node.ctx.tickets.issue("u_old", ttl=1, now=time.time() - 100)
        r = await http.post("/v1/session", json={"resume": expired})
        assert r.json()["user_id"] == "u_old"  # expired but within the resume window
        for bad in ('{"user_id": 5}', "not json", '{"transports": "websocket"}'):
            r = await http.post("/v1/session", content=bad)
            assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"


async def test_trusted_user_id(nursery):
    node, http = await gatekeeper(nursery, [core_node(1), push_node(1)], auth_trust_user_id="true")
    async with http:
        r = await http.post("/v1/session", json={"user_id": "u_known"})
        assert r.json()["user_id"] == "u_known"


async def test_capacity_reached_gives_503_with_retry_after_and_status_is_exact(nursery):
    node, http = await gatekeeper(nursery, [core_node(1), push_node(1, connections=2)],
                                  gatekeeper_licensed_capacity="4")
    async with http:
        status = (await http.get("/v1/status")).json()
        assert status == {"admitted": 2, "capacity": 4, "licensed_capacity": 4,
                          "qos_capacity": status["qos_capacity"], "at_capacity": False,
                          "nodes": {"core": 1, "push": 1, "worker": 0, "scheduler": 0}}
        for _ in range(2):
            assert (await http.post("/v1/session")).status_code == 200
        status = (await http.get("/v1/status")).json()
        assert status["admitted"] == 4 and status["at_capacity"] is True
        r = await http.post("/v1/session")
        assert r.status_code == 503
        err = r.json()["error"]
        assert err["code"] == "at_capacity" and 1 <= err["retry_after"] <= 10
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["queue"]


async def test_waiting_room_admits_earlier_arrivals_first(nursery):
    node, http = await gatekeeper(nursery, [core_node(1), push_node(1, connections=1)],
                                  gatekeeper_licensed_capacity="1")
    gk = node.ctx.gatekeeper
    async with http:
        first = (await http.post("/v1/session")).json()["queue"]
        second = (await http.post("/v1/session")).json()["queue"]
        # one place frees up: the push node now holds no session
        await node.ctx.registry.heartbeat(push_node(1, connections=0), ttl=60)
        gk._apply(await node.ctx.registry.nodes(), time.time())
        newcomer = await http.post("/v1/session")
        assert newcomer.status_code == 503  # two waited longer
        assert (await http.post("/v1/session", json={"queue": second})).status_code == 503  # first is ahead
        assert (await http.post("/v1/session", json={"queue": first})).status_code == 200


async def test_dead_core_node_leaves_the_lists_within_its_ttl(nursery, monkeypatch):
    monkeypatch.setattr(gatekeeper_role, "SNAPSHOT_INTERVAL", 0.1)  # it reads the registry that often
    node, http = await gatekeeper(nursery, [core_node(1), push_node(1)])
    async with http:
        await node.ctx.registry.heartbeat(core_node(2), ttl=0.5)  # then it "dies": no more heartbeats
        gk = node.ctx.gatekeeper
        gk._apply(await node.ctx.registry.nodes(), time.time())
        assert len((await http.post("/v1/session")).json()["core"]) == 2
        with trio.fail_after(10):
            while len((await http.post("/v1/session")).json()["core"]) != 1:
                await trio.sleep(0.05)


async def test_qos_breach_stops_capacity_growth_and_it_recovers(nursery):
    node, http = await gatekeeper(nursery, [core_node(1), push_node(1)],
                                  gatekeeper_qos_initial_capacity="100")
    gk = node.ctx.gatekeeper

    async with http:
        busy = NodeInfo(id="push-1", roles=["push"], endpoints=push_node(1).endpoints,
                        load={"connections": 90, "max_connections": 1000}, qos={"fanout_p99_ms": 50})
        await node.ctx.registry.heartbeat(busy, ttl=60)
        for _ in range(4):
            gk._apply(await node.ctx.registry.nodes(), time.time())
        grown = (await http.get("/v1/status")).json()["qos_capacity"]
        assert grown > 100
        breach = NodeInfo(id="push-1", roles=["push"], endpoints=busy.endpoints, load=busy.load,
                          qos={"fanout_p99_ms": 2500})
        await node.ctx.registry.heartbeat(breach, ttl=60)
        gk._apply(await node.ctx.registry.nodes(), time.time())
        stopped = (await http.get("/v1/status")).json()
        assert stopped["qos_capacity"] <= 90 and stopped["at_capacity"] is True
        assert (await http.post("/v1/session")).status_code == 503
        await node.ctx.registry.heartbeat(busy, ttl=60)
        for _ in range(RESUME_AFTER):  # recovered: the signal has stayed well under its stop that long
            gk._apply(await node.ctx.registry.nodes(), time.time())
        assert (await http.get("/v1/status")).json()["qos_capacity"] > stopped["qos_capacity"]


async def test_refusals_answered_beneath_quart_match_the_route(nursery):
    # roles/gatekeeper/fastpath.py answers refusals without Quart: same status, headers, body and metrics,
    # and it leaves everything else (bad bodies, oversized bodies) to the route.
    node, http = await gatekeeper(nursery, [core_node(1), push_node(1, connections=1)],
                                  gatekeeper_licensed_capacity="1")
    async with http:
        r = await http.post("/v1/session", json={"name": "Ann"})
        assert r.status_code == 503 and r.headers["content-type"] == "application/json"
        assert r.headers["Access-Control-Allow-Origin"] == "*" and int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "at_capacity" and r.json()["queue"]
        assert node.ctx.tickets.verify(r.json()["queue"], role="queue").user_id.startswith("q_")
        assert (await http.post("/v1/session", content='{"name": 5}')).status_code == 400
        assert (await http.post("/v1/session", content=b"{" + b" " * 20_000 + b"}")).status_code == 413
        metrics = (await http.get("/metrics")).text
        assert 'playtotv_http_requests_total{method="POST",role="gatekeeper",route="/v1/session",status="503"} 1.0' \
            in metrics
        assert 'playtotv_admissions_total{outcome="rejected"} 1.0' in metrics


async def test_a_flooded_gatekeepers_own_lag_does_not_cut_capacity(nursery):
    # Admitted clients never talk to a gatekeeper again: its loop lag under a thundering herd is not the
    # platform's QoS (bench admission saw capacity collapse to the floor when it counted).
    node, http = await gatekeeper(nursery, [core_node(1), push_node(1, connections=90)],
                                  gatekeeper_qos_initial_capacity="100")
    gk = node.ctx.gatekeeper
    async with http:
        await node.ctx.registry.heartbeat(NodeInfo(id="gk-2", roles=["gatekeeper"], qos={"loop_lag_ms": 900}),
                                          ttl=60)
        gk._apply(await node.ctx.registry.nodes(), time.time())
        assert (await http.get("/v1/status")).json()["qos_capacity"] >= 100
        await node.ctx.registry.heartbeat(core_node(1, loop_lag_ms=900), ttl=60)
        gk._apply(await node.ctx.registry.nodes(), time.time())
        assert (await http.get("/v1/status")).json()["qos_capacity"] < 100


async def test_a_viewer_ticket_is_no_queue_token_and_a_queue_token_no_resume(nursery):
    """Each token is accepted only for its own purpose: a viewer ticket shown as ``queue`` does not jump the
    waiting room (it is a newcomer), and a queue token shown as ``resume`` does not give its q_ identity."""
    node, http = await gatekeeper(nursery, [core_node(1), push_node(1, connections=1)],
                                  gatekeeper_licensed_capacity="1")
    gk = node.ctx.gatekeeper
    async with http:
        early_viewer, _ = node.ctx.tickets.issue("u_early", ttl=600, now=time.time() - 100)
        waiting = (await http.post("/v1/session")).json()["queue"]
        await node.ctx.registry.heartbeat(push_node(1, connections=0), ttl=60)
        gk._apply(await node.ctx.registry.nodes(), time.time())
        jumper = await http.post("/v1/session", json={"queue": early_viewer})
        assert jumper.status_code == 503  # one waited longer; the viewer ticket earned no place
        assert node.ctx.tickets.verify(jumper.json()["queue"], role="queue").user_id.startswith("q_")
        admitted = await http.post("/v1/session", json={"queue": waiting, "resume": waiting})
        assert admitted.status_code == 200 and admitted.json()["user_id"].startswith("u_")


async def test_nodes_failing_the_schedulers_probes_leave_the_endpoint_lists(nursery):
    """A node still in the registry but unreachable (its probe failed) is not handed out; if the probes
    fail everywhere, the probe is the likelier fault and every node stays listed."""
    node, http = await gatekeeper(nursery, [core_node(1), core_node(2), push_node(1), push_node(2)])
    gk = node.ctx.gatekeeper

    async def lists() -> tuple[list[str], list[str]]:
        body = (await http.post("/v1/session")).json()
        return sorted(body["core"]), sorted(p["websocket"] for p in body["push"])

    async with http:
        scheduler = NodeInfo(id="sched-1", roles=["scheduler"], unreachable=["core-2", "push-1"])
        await node.ctx.registry.heartbeat(scheduler, ttl=60)
        gk._apply(await node.ctx.registry.nodes(), time.time())
        assert await lists() == (["http://10.9.0.1:8001"], ["ws://10.9.1.2:8002/v1/ws"])
        assert (await http.get("/v1/status")).json()["at_capacity"] is False  # no QoS consequence
        everything = NodeInfo(id="sched-1", roles=["scheduler"], unreachable=["core-1", "core-2"])
        await node.ctx.registry.heartbeat(everything, ttl=60)
        gk._apply(await node.ctx.registry.nodes(), time.time())
        assert (await lists())[0] == ["http://10.9.0.1:8001", "http://10.9.0.2:8001"]


async def test_a_push_nodes_users_are_counted_not_its_connections(nursery):
    """One ticket holding 210 WebSockets is one admitted session (push nodes report distinct users)."""
    greedy = NodeInfo(id="push-1", roles=["push"], endpoints=push_node(1).endpoints,
                      load={"connections": 210, "sessions": 1})
    node, http = await gatekeeper(nursery, [core_node(1), greedy], gatekeeper_licensed_capacity="5")
    async with http:
        status = (await http.get("/v1/status")).json()
        assert status["admitted"] == 1 and status["at_capacity"] is False
        assert (await http.post("/v1/session")).status_code == 200


async def test_waiting_room_entries_of_clients_that_never_came_back_expire_after_a_retry_or_two(nursery):
    """A crowd refused at once that never retries (900 such left 700 entries ahead of real newcomers for
    33 s) stops counting ahead once it has missed a retry or two; a client that keeps retrying keeps its
    place, and one that comes back late still has its first arrival in its token."""
    import json

    from playtotv.roles.gatekeeper import RETRY_AFTER_RANGE, WAITING_TTL
    from playtotv.roles.gatekeeper.outcome import Place, Refusal

    node, http = await gatekeeper(nursery, [core_node(1), push_node(1, connections=1)],
                                  gatekeeper_licensed_capacity="1")
    gk = node.ctx.gatekeeper
    assert RETRY_AFTER_RANGE[1] * 1.5 < WAITING_TTL <= 3 * RETRY_AFTER_RANGE[1]  # the SDKs jitter up to 1.5x
    start = time.time()
    for _ in range(50):
        assert isinstance(gk.decide(b"", start), Refusal)
    loyal = json.loads(gk.decide(b"", start + 0.5).body)["queue"]
    retry = json.dumps({"queue": loyal}).encode()
    now = start + 0.5
    while now < start + WAITING_TTL + 1:
        now += RETRY_AFTER_RANGE[1]
        assert isinstance(gk.decide(retry, now), Refusal)  # still full
    await node.ctx.registry.heartbeat(push_node(1, connections=0), ttl=60)
    gk._apply(await node.ctx.registry.nodes(), now)
    assert len(gk.room) == 1  # the crowd is gone, the loyal client waits on
    assert isinstance(gk.decide(b"", now), Refusal)  # a newcomer is behind the loyal client...
    assert isinstance(gk.decide(retry, now), Place)  # ...who gets the place
    late = now + WAITING_TTL * 2
    gk._apply(await node.ctx.registry.nodes(), late)
    assert len(gk.room) == 0 and isinstance(gk.decide(retry, late), Place)  # its token still ranks it


async def test_new_sessions_are_rate_limited_per_client_address(nursery):
    """230 anonymous sessions from one address in 0.3 s once filled a capacity of 200: past its burst, an
    address gets 429 rate_limited with Retry-After, and nothing is admitted or queued for it."""
    node, http = await gatekeeper(nursery, [core_node(1), push_node(1)], gatekeeper_session_rate="0.5",
                                  gatekeeper_session_burst="3")
    gk = node.ctx.gatekeeper
    async with http:
        statuses = [(await http.post("/v1/session", json={})).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        admitted = (await http.get("/v1/status")).json()["admitted"]
        for _ in range(20):
            r = await http.post("/v1/session", json={})
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == "rate_limited" and r.json()["error"]["retry_after"] >= 1
            assert int(r.headers["Retry-After"]) >= 1
        assert (await http.get("/v1/status")).json()["admitted"] == admitted and len(gk.room) == 0
        assert (await http.get("/v1/status")).status_code == 200  # other routes are not limited
        metrics = (await http.get("/metrics")).text
        assert 'playtotv_admissions_total{outcome="rate_limited"} 20.0' in metrics


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(nursery):
    node, http = await gatekeeper(nursery, [core_node(1), push_node(1)], gatekeeper_session_rate="0.5",
                                  gatekeeper_session_burst="1", gatekeeper_trusted_proxies="127.0.0.1")
    async with http:
        for client in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):
            r = await http.post("/v1/session", json={}, headers={"X-Forwarded-For": client})
            assert r.status_code == 200
        r = await http.post("/v1/session", json={}, headers={"X-Forwarded-For": "198.51.100.1"})
        assert r.status_code == 429
