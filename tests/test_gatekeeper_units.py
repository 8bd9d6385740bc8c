"""Sans-io parts of the gatekeeper: QoS capacity, waiting room, endpoint ordering."""

from __future__ import annotations

import random

import pytest

from playtotv.registry.base import NodeInfo
from playtotv.roles.gatekeeper.admissions import Admissions
from playtotv.roles.gatekeeper.capacity import (
    CPU_GROW_UNTIL,
    FLOOR_ROOM,
    GROW_UNTIL,
    MIN_CAPACITY,
    MIN_GROWTH_STEP,
    RECOVERY_TICKS,
    RESUME_AFTER,
    RESUME_BELOW,
    CapacityController,
    Slo,
)
from playtotv.roles.gatekeeper.placement import order_core, order_push
from playtotv.roles.gatekeeper.waiting_room import WaitingRoom


def test_capacity_grows_only_when_used_and_healthy():
    c = CapacityController(initial=100, ceiling=10_000)
    assert c.update(admitted=10, breaches=[]) == 100  # idle: no growth
    for _ in range(RECOVERY_TICKS):
        c.update(admitted=90, breaches=[])
    assert c.value > 100


def test_capacity_stops_at_current_level_on_breach_and_recovers():
    c = CapacityController(initial=1000, ceiling=100_000)
    c.update(admitted=800, breaches=[])
    at_breach = c.update(admitted=600, breaches=["fanout_p99_ms=1500>1000"], pressure=1.5)
    assert at_breach <= 600  # stopped at (below) the level where QoS broke
    during = c.update(admitted=600, breaches=["fanout_p99_ms=1600>1000"], pressure=1.6)
    assert during < at_breach  # keeps backing off while the breach worsens
    for _ in range(RESUME_AFTER - 1):
        assert c.update(admitted=during, breaches=[]) == during  # not yet: a few good samples are no recovery
    assert c.update(admitted=during, breaches=[]) > during


def test_capacity_bounded_by_ceiling_and_floor():
    c = CapacityController(initial=50, ceiling=60)
    for _ in range(10):
        c.update(admitted=c.value, breaches=[])
    assert c.value == 60
    for _ in range(200):
        c.update(admitted=0, breaches=["x"])
    assert c.value == MIN_CAPACITY


def test_slo_breaches_name_the_signal():
    slo = Slo({"fanout_p99_ms": 1000, "loop_lag_ms": 100})
    assert slo.breaches([{"fanout_p99_ms": 20}, {"loop_lag_ms": 5, "other": 1e9}]) == []
    assert slo.breaches([{"fanout_p99_ms": 1200}]) == ["fanout_p99_ms=1200>1000"]


def test_waiting_room_is_fifo_by_first_arrival():
    room = WaitingRoom(ttl=30)
    room.wait("b", first_arrival=2.0, now=2.0)
    room.wait("a", first_arrival=1.0, now=2.0)
    room.wait("c", first_arrival=3.0, now=3.0)
    assert room.ahead_of(1.0) == 0
    assert room.ahead_of(2.5) == 2
    assert room.ahead_of(10.0) == 3  # a newcomer is behind everyone
    room.leave("a")
    assert room.ahead_of(2.5) == 1
    room.expire(now=40.0)
    assert len(room) == 0 and room.ahead_of(10.0) == 0


def test_core_order_is_sticky_per_user_and_moves_only_lost_nodes_users():
    nodes = [NodeInfo(id=f"core-{i}", roles=["core"]) for i in range(5)]
    users = [f"u{i}" for i in range(500)]
    first = {u: order_core(u, nodes)[0].id for u in users}
    assert first == {u: order_core(u, list(reversed(nodes)))[0].id for u in users}
    assert len(set(first.values())) == 5  # spread over every node
    survivors = [n for n in nodes if n.id != "core-2"]
    for u in users:
        if first[u] != "core-2":
            assert order_core(u, survivors)[0].id == first[u]


def test_push_order_prefers_free_capacity_but_spreads():
    full = NodeInfo(id="full", roles=["push"], load={"max_connections": 100, "connections": 100})
    empty = NodeInfo(id="empty", roles=["push"], load={"max_connections": 100, "connections": 0})
    rng = random.Random(1)
    firsts = [order_push([full, empty], rng)[0].id for _ in range(50)]
    assert set(firsts) == {"empty"}  # of two, the freer one always comes first
    many = [NodeInfo(id=f"p{i}", roles=["push"], load={"max_connections": 100, "connections": 10})
            for i in range(6)]
    assert len({order_push(many, rng)[0].id for _ in range(100)}) > 3  # equal nodes: randomised
    assert sorted(n.id for n in order_push(many, rng)) == sorted(n.id for n in many)


def test_capacity_growth_slows_near_the_slo_and_stops_short_of_it():
    def grown(pressure: float) -> int:
        c = CapacityController(initial=1000, ceiling=100_000)
        for _ in range(RECOVERY_TICKS):
            c.update(admitted=1000, breaches=[], pressure=pressure)
        return c.value - 1000

    assert grown(0.0) > grown(0.4) > grown(0.7) > 0  # the nearer the limit, the smaller the step
    assert grown(GROW_UNTIL) == 0 and grown(0.95) == 0  # close to the SLO: hold, do not overshoot
    assert 0 < grown(GROW_UNTIL * 0.99) < RECOVERY_TICKS * MIN_GROWTH_STEP  # just short: a crawl, no floor
    slo = Slo({"fanout_p99_ms": 1000, "loop_lag_ms": 100})
    assert slo.pressure([{"fanout_p99_ms": 500}, {"loop_lag_ms": 80}]) == 0.8
    assert slo.pressure([{}, {"other": 5.0}]) == 0.0


def test_growth_has_a_floor_only_well_short_of_the_stop():
    def per_tick(room: float) -> int:
        c = CapacityController(initial=1000, ceiling=100_000, max_step_per_node=10)
        for _ in range(RECOVERY_TICKS):
            c.update(admitted=1000, breaches=[], pressure=GROW_UNTIL * (1.0 - room))
        return (c.value - 1000) // RECOVERY_TICKS

    assert per_tick(FLOOR_ROOM + 0.05) == MIN_GROWTH_STEP  # 10 x 0.3 = 3 a tick, raised to the floor
    assert per_tick(FLOOR_ROOM - 0.05) == 2  # 10 x 0.2: proportional only, so growth eases into the stop


def test_once_at_the_stop_growth_waits_until_the_signal_is_clearly_back_under_it():
    c = CapacityController(initial=1000, ceiling=100_000)
    for _ in range(RECOVERY_TICKS):
        c.update(admitted=1000, breaches=[], pressure=0.3)
    c.update(admitted=c.value, breaches=[], pressure=GROW_UNTIL)  # the stop: hold
    held = c.value
    for _ in range(10):  # a tail figure hovering just under the stop is no room to grow into
        assert c.update(admitted=held, breaches=[], pressure=GROW_UNTIL * 0.97) == held
    for _ in range(RESUME_AFTER - 1):  # clearly under it, but for a few seconds: the signals' own noise
        assert c.update(admitted=held, breaches=[], pressure=GROW_UNTIL * RESUME_BELOW * 0.95) == held
    assert c.update(admitted=held, breaches=[], pressure=GROW_UNTIL * 0.97) == held  # a dip: start again
    for _ in range(RESUME_AFTER - 1):
        c.update(admitted=held, breaches=[], pressure=GROW_UNTIL * RESUME_BELOW * 0.95)
    assert c.update(admitted=held, breaches=[], pressure=GROW_UNTIL * RESUME_BELOW * 0.95) > held
    # ...and once resumed, it grows by the room left until the stop is reached again
    grown = c.update(admitted=c.value, breaches=[], pressure=GROW_UNTIL * 0.97)
    assert grown > held
    c.update(admitted=c.value, breaches=[], pressure=GROW_UNTIL * 1.01)
    assert c.update(admitted=c.value, breaches=[], pressure=GROW_UNTIL * 0.97) == c.value


def test_capacity_grows_on_sessions_in_use_not_on_admissions_still_connecting():
    c = CapacityController(initial=100, ceiling=10_000)
    for _ in range(RECOVERY_TICKS):
        c.update(admitted=100, breaches=[], in_use=20)  # admitted, but most have not connected yet
    assert c.value == 100
    c.update(admitted=100, breaches=[], in_use=90)
    assert c.value > 100


def test_admissions_pending_are_those_not_yet_seen_connected():
    a = Admissions(window=10)
    a.observe(99.0, {"p1": 50})
    for _ in range(30):
        a.add(100.5)
    assert a.pending(101.0, a.recent(101.0), {"p1": 50}) == 30  # none connected yet
    a.observe(102.0, {"p1": 70})
    assert a.pending(102.0, a.recent(102.0), {"p1": 70}) == 10  # 20 of them have connected
    # a node (re)appearing brings no gain; departures hide arrivals: count more, never fewer
    assert a.pending(103.0, a.recent(103.0), {"p1": 70, "p2": 500}) == 10
    assert a.pending(103.0, a.recent(103.0), {"p1": 40}) == 30
    assert a.pending(111.0, a.recent(111.0), {"p1": 70}) == 0  # out of the window


def test_a_breach_with_nobody_admitted_does_not_slow_later_growth():
    from playtotv.roles.gatekeeper.capacity import ADDITIVE_STEP, MIN_CAPACITY

    c = CapacityController(initial=1000, ceiling=100_000)
    c.update(admitted=0, breaches=["loop_lag_ms=120>100"])  # a node starting up
    assert c.value == MIN_CAPACITY
    for _ in range(RECOVERY_TICKS):
        c.update(admitted=c.value, breaches=[])
    previous = c.value
    c.update(admitted=c.value, breaches=[])
    assert c.value - previous > ADDITIVE_STEP  # multiplicative (plus its floor), not additive


def test_capacity_grows_additively_once_a_breach_has_found_the_limit():
    from playtotv.roles.gatekeeper.capacity import ADDITIVE_STEP

    c = CapacityController(initial=1000, ceiling=100_000)
    for _ in range(RECOVERY_TICKS):
        c.update(admitted=1000, breaches=[])
    assert c.value - 1000 > ADDITIVE_STEP  # before any breach: multiplicative
    c.update(admitted=c.value, breaches=["fanout_p99_ms=1500>1000"])
    for _ in range(RESUME_AFTER - 1):
        c.update(admitted=c.value, breaches=[])
    before = c.value
    for _ in range(5):
        previous = c.value
        c.update(admitted=c.value, breaches=[])
        assert 0 < c.value - previous <= ADDITIVE_STEP
    assert c.value > before


def test_growth_is_multiplicative_again_well_past_a_breach_that_was_not_the_limit():
    # A growth step's handshakes breached at a low level: once capacity has grown healthy well past it,
    # the platform evidently holds more, and crawling on additively would take minutes to find the limit.
    from playtotv.roles.gatekeeper.capacity import ADDITIVE_STEP, FORGET_BREACH_BEYOND

    c = CapacityController(initial=400, ceiling=100_000)
    c.update(admitted=400, breaches=["fanout_p99_ms=250>200"], pressure=1.25)
    breach_level = c.value
    steps = []
    while c.value < breach_level * FORGET_BREACH_BEYOND + 100:
        previous = c.value
        c.update(admitted=c.value, breaches=[], pressure=0.2)
        steps.append((previous, c.value - previous))
    below = [step for level, step in steps if level < breach_level * FORGET_BREACH_BEYOND]
    beyond = [step for level, step in steps if level >= breach_level * FORGET_BREACH_BEYOND]
    assert below and max(below) <= ADDITIVE_STEP
    assert beyond and min(beyond) > ADDITIVE_STEP
    c.update(admitted=c.value, breaches=["fanout_p99_ms=250>200"], pressure=1.25)  # a new breach: additive
    for _ in range(RESUME_AFTER):
        previous = c.value
        c.update(admitted=c.value, breaches=[], pressure=0.2)
    assert 0 < c.value - previous <= ADDITIVE_STEP


def test_cpu_share_stops_growth_at_its_own_stop():
    # Every signal's stop reads GROW_UNTIL; the CPU share's is a little nearer its limit (its 5 s
    # average's noise reached 0.8 with the latencies at 0.55-0.7 of their SLO, bench overload).
    slo = Slo({"fanout_p99_ms": 200.0, "cpu_busy": 1.0})
    assert slo.pressure([{"fanout_p99_ms": 200.0 * GROW_UNTIL}]) == pytest.approx(GROW_UNTIL)
    assert slo.pressure([{"cpu_busy": CPU_GROW_UNTIL}]) == pytest.approx(GROW_UNTIL)
    assert slo.pressure([{"cpu_busy": GROW_UNTIL}]) < GROW_UNTIL
    assert slo.pressure([{"cpu_busy": 0.5, "fanout_p99_ms": 100.0}, {"cpu_busy": 0.9}]) > GROW_UNTIL
    assert slo.pressure([{"cpu_busy": 0.5, "fanout_p99_ms": 170.0}]) > GROW_UNTIL  # the worst one counts
    assert not slo.breaches([{"cpu_busy": 0.95}]) and slo.breaches([{"cpu_busy": 1.05}])


def test_growth_steps_are_bounded_per_push_node():
    # Every step's newcomers handshake at once: a large platform must not grow by a quarter in one tick
    # on one push node, and the bound grows with the nodes that share the handshakes.
    from playtotv.roles.gatekeeper.capacity import ADDITIVE_STEP, MAX_GROWTH_STEP

    def step(push_nodes: int, limit_found: bool = False) -> int:
        c = CapacityController(initial=10_000, ceiling=1_000_000)
        if limit_found:
            c.update(admitted=10_000, breaches=["fanout_p99_ms=1500>1000"])
            for _ in range(RESUME_AFTER - 1):
                c.update(admitted=c.value, breaches=[], push_nodes=push_nodes)
        before = c.value
        c.update(admitted=before, breaches=[], push_nodes=push_nodes)
        return c.value - before

    assert step(1) == MAX_GROWTH_STEP
    assert step(4) == 4 * MAX_GROWTH_STEP
    assert step(400) == 10_000 // 4 + 50  # multiplicative again when the nodes absorb more than that
    assert step(1, limit_found=True) == ADDITIVE_STEP
    assert step(3, limit_found=True) == 3 * ADDITIVE_STEP
    bigger = CapacityController(initial=10_000, ceiling=1_000_000, max_step_per_node=300)  # whole-core nodes
    bigger.update(admitted=10_000, breaches=[], push_nodes=2)
    assert bigger.value == 10_600


def test_a_lingering_breach_holds_capacity_and_a_worsening_one_backs_off():
    c = CapacityController(initial=1000, ceiling=100_000)
    c.update(admitted=1000, breaches=["fanout_p99_ms=250>200"], pressure=1.25)
    first = c.value
    assert first < 1000
    for pressure in (1.25, 1.25, 1.2, 1.1):  # the same bad samples in the node's window, or fewer
        c.update(admitted=1000, breaches=[f"fanout_p99_ms={pressure * 200:g}>200"], pressure=pressure)
    assert c.value == first
    c.update(admitted=1000, breaches=["fanout_p99_ms=310>200"], pressure=1.55)  # worse: back off
    assert c.value < first


def test_breaches_back_off_from_the_load_that_breached_not_again_from_a_lower_capacity():
    # Nobody is disconnected: once capacity is under what is in, each breach of that same load says
    # only that this load is too much; it must not sink capacity another step each time.
    from playtotv.roles.gatekeeper.capacity import BREACH_BACKOFF

    c = CapacityController(initial=1000, ceiling=100_000)
    c.update(admitted=1000, breaches=["fanout_p99_ms=250>200"], pressure=1.25)
    after_first = c.value
    assert after_first == int(1000 * BREACH_BACKOFF)
    for _ in range(3):  # the same 1,000 in, breaching now and then, with healthy seconds between
        for _ in range(5):
            c.update(admitted=1000, breaches=[], pressure=0.85)
        c.update(admitted=1000, breaches=["fanout_p99_ms=250>200"], pressure=1.25)
    assert c.value == after_first
    c.update(admitted=900, breaches=[], pressure=0.85)
    c.update(admitted=900, breaches=["fanout_p99_ms=250>200"], pressure=1.25)  # fewer in, still too many
    assert c.value == int(900 * BREACH_BACKOFF)


def test_push_fanout_window_keeps_enough_samples_for_a_p99():
    # One channel at a few messages a second gives ~50 samples in 10 s, whose nearest-rank p99 is the
    # maximum: one late message would read as the node's p99. The window keeps the last MIN_SAMPLES.
    from playtotv.roles.push.fanout_delay import MAX_AGE_SECONDS, MIN_SAMPLES, SlidingWindow

    w = SlidingWindow(window=10.0)
    for i in range(MIN_SAMPLES):
        w.record(i * 0.2, 0.5 if i == 50 else 0.05)  # one spike among 20 s of samples
    now = MIN_SAMPLES * 0.2
    assert w.percentile(now, 0.99) == 0.05  # the spike alone is not the p99
    for i in range(MIN_SAMPLES // 10):
        w.record(now + i * 0.01, 0.4)  # a real slowdown: many late messages
    assert w.percentile(now + 1, 0.99) == 0.4  # seen at once
    busy = SlidingWindow(window=10.0)
    for i in range(2000):
        busy.record(i * 0.01, 0.01)  # a busy node: 2,000 samples in 20 s
    assert busy.percentile(20.0, 0.99) == 0.01 and len(busy._samples) <= 1001  # ten seconds of them
    assert w.percentile(now + MAX_AGE_SECONDS + 1, 0.99) is None  # nothing older than the max age


def test_capacity_cut_by_a_breach_with_nobody_in_recovers_without_anyone_connecting():
    # A breach with hardly anyone admitted (a dead node's probe, a restart's queue lag, a flood of
    # connections that were never admitted) says nothing about how many sessions the platform holds.
    # Growth by use can never start from there (nobody is connected to use the capacity), so once the
    # signals are healthy again, capacity grows back to where it was before, bounded per tick as always.
    from playtotv.roles.gatekeeper.capacity import MAX_GROWTH_STEP

    for breach in ("probe_core_rtt_ms=3000>200", "loop_lag_ms=131>100", "queue_lag_s=27.8>5"):
        c = CapacityController(initial=1000, ceiling=100_000)
        c.update(admitted=0, breaches=[breach], pressure=15.0, in_use=0)
        c.update(admitted=3, breaches=[breach], pressure=15.0, in_use=0)
        assert c.value == MIN_CAPACITY  # while it lasts, nobody more comes in
        for _ in range(RECOVERY_TICKS - 1):
            assert c.update(admitted=0, breaches=[], pressure=0.1, in_use=0) == MIN_CAPACITY
        steps = []
        for _ in range(60):
            before = c.value
            c.update(admitted=0, breaches=[], pressure=0.1, in_use=0)
            steps.append(c.value - before)
        assert c.value == 1000, breach  # back where it was: no higher, since nobody used more
        assert max(steps) <= MAX_GROWTH_STEP


def test_recovery_on_an_empty_platform_waits_for_healthy_signals_and_never_passes_a_limit_found():
    c = CapacityController(initial=1000, ceiling=100_000)
    c.update(admitted=0, breaches=["queue_lag_s=27.8>5"], pressure=5.5, in_use=0)
    for _ in range(20):  # under the SLO but at the stop: that is no room to grow into
        assert c.update(admitted=0, breaches=[], pressure=GROW_UNTIL, in_use=0) == MIN_CAPACITY
    # A breach that did find a limit (a real load breaching) is not undone by an empty platform: the
    # sessions that left were too many, and the capacity they left is what newcomers may use.
    c = CapacityController(initial=1000, ceiling=100_000)
    c.update(admitted=400, breaches=["fanout_p99_ms=1500>1000"], pressure=1.5, in_use=400)
    limit = c.value
    for _ in range(60):
        c.update(admitted=0, breaches=[], pressure=0.1, in_use=0)
    assert c.value == limit


def test_the_client_address_is_the_peer_unless_a_trusted_proxy_forwarded_it():
    from playtotv.roles.gatekeeper.sessionlimit import ClientAddresses, networks

    plain = ClientAddresses([])
    assert str(plain.client("203.0.113.7", "198.51.100.1")) == "203.0.113.7"  # nobody trusted: the peer
    proxied = ClientAddresses(networks(["10.0.0.0/8", "192.0.2.10"]))
    assert str(proxied.client("203.0.113.7", "198.51.100.1")) == "203.0.113.7"  # not a proxy of ours
    assert str(proxied.client("10.1.2.3", "198.51.100.1")) == "198.51.100.1"
    # read from the right: what the client put on the left is its own say
    assert str(proxied.client("10.1.2.3", "1.1.1.1, 198.51.100.1, 192.0.2.10")) == "198.51.100.1"
    assert str(proxied.client("10.1.2.3", "10.9.9.9, 10.8.8.8")) == "10.9.9.9"  # all ours: the farthest
    assert str(proxied.client("10.1.2.3", "garbage, 10.8.8.8")) == "10.8.8.8"
    assert str(proxied.client("::ffff:198.51.100.1", None)) == "198.51.100.1"
    # IPv6 subscribers get a /64 each: one bucket per /64
    a = plain.key(plain.client("2001:db8:1:2::1", None))
    b = plain.key(plain.client("2001:db8:1:2:ffff::9", None))
    assert a == b == "2001:db8:1:2::/64" and plain.key(plain.client("2001:db8:1:3::1", None)) != a
    assert plain.key(None) == "unknown"


def test_session_limit_per_address_with_burst_refill_and_exemptions():
    from playtotv.roles.gatekeeper.sessionlimit import SessionLimit
    from playtotv.settings import GatekeeperSettings

    now = [0.0]
    settings = GatekeeperSettings(session_rate=2.0, session_burst=3, session_rate_exempt=["192.0.2.0/24"])
    limit = SessionLimit(settings, clock=lambda: now[0])

    def scope(peer: str, forwarded: str | None = None) -> dict:
        headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
        return {"client": (peer, 40000), "headers": headers}

    assert [limit.wait(scope("203.0.113.7")) for _ in range(3)] == [None, None, None]
    wait = limit.wait(scope("203.0.113.7"))
    assert wait is not None and 0 < wait <= 0.5
    assert limit.wait(scope("203.0.113.8")) is None  # another address, its own bucket
    assert limit.wait(scope("203.0.113.7", "198.51.100.1")) is not None  # an untrusted peer's header is ignored
    now[0] += 0.5
    assert limit.wait(scope("203.0.113.7")) is None  # refilled at 2 a second
    assert all(limit.wait(scope("192.0.2.55")) is None for _ in range(100))  # exempt
    off = SessionLimit(GatekeeperSettings(session_rate=0))
    assert all(off.wait(scope("203.0.113.7")) is None for _ in range(100))
    assert GatekeeperSettings().session_rate > 0  # on unless turned off
