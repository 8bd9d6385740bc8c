"""Pure pieces of the gameplay domain: scoring, tiers, rate limits, the notification cursor, the cache."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from playtotv.gameplay import loyalty, score_formula
from playtotv.gameplay.answers import validate
from playtotv.gameplay.cache import LocalCaches, TTLCache
from playtotv.gameplay.documents import InteractionDoc
from playtotv.gameplay.notifications import decode_cursor, encode_cursor
from playtotv.gameplay.ratelimit import TokenBuckets
from playtotv.protocol.errors import ApiError
from playtotv.protocol.rest import Option


# -- scoring (docs/api.md) ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("elapsed", "streak", "expected"),
    [
        (0.0, 1, 1000),  # instant
        (0.5, 1, 1000),  # full points within the first half second
        (0.51, 1, 983),  # 1000 * (1 - 0.51 / 30) = 983.0
        (15.0, 1, 500),  # at the deadline: half
        (99.0, 1, 500),  # clamped to the duration
        (-3.0, 1, 1000),  # a clock a little ahead: clamped to 0
        (0.0, 2, 1100),  # 2nd in a row: +10 %
        (0.0, 4, 1300),
        (0.0, 6, 1500),  # capped at +50 %
        (0.0, 20, 1500),
        (7.5, 3, 900),  # 750 * 1.2
    ],
)
def test_award_formula(elapsed: float, streak: int, expected: int) -> None:
    assert score_formula.award(1000, 15.0, elapsed, streak) == expected


def test_rounding_happens_once_on_the_final_amount() -> None:
    # speed part 5 * (1 - 2.5 / 20) = 4.375; with the 2nd-in-a-row bonus 4.8125 → 5. Rounding the speed
    # part first would give round(4 * 1.1) = 4.
    assert score_formula.award(5, 10.0, 2.5, 2) == 5


def test_loyalty_tiers() -> None:
    assert loyalty.tier_for(0) == "newcomer"
    assert loyalty.tier_for(999) == "newcomer"
    assert loyalty.tier_for(1_000) == "bronze"
    assert loyalty.tier_for(10_000) == "silver"
    assert loyalty.tier_for(10**9) == "platinum"
    assert loyalty.next_tier(400) == ("bronze", 600)
    assert loyalty.next_tier(10**9) is None


# -- answer validation ----------------------------------------------------------------------------------------
def _interaction(**changes: object) -> InteractionDoc:
    base = dict(id="i_1", episode_id="e_1", kind="quiz", prompt="?", options=[Option(id="a", label="A"),
                Option(id="b", label="B")], correct="a", duration=10.0, points=1000, status="open",
                opens_at=100.0, closes_at=110.0)
    return InteractionDoc(**{**base, **changes})  # type: ignore[arg-type]


def _code(fn) -> str:
    with pytest.raises(ApiError) as info:
        fn()
    return info.value.code.value


def test_validation_order_and_rules() -> None:
    assert validate(_interaction(), "a", 105.0).id == "i_1"
    assert _code(lambda: validate(None, "a", 105.0)) == "not_found"
    assert _code(lambda: validate(_interaction(), "a", 110.0)) == "interaction_closed"  # at closes_at
    assert _code(lambda: validate(_interaction(status="draft"), "z", 105.0)) == "interaction_closed"
    assert _code(lambda: validate(_interaction(), "z", 105.0)) == "invalid_choice"
    assert _code(lambda: validate(_interaction(), 1, 105.0)) == "invalid_choice"
    rating = _interaction(kind="rating", options=[], scale=(1, 5), correct=None)
    assert validate(rating, 5, 105.0)
    for bad in (0, 6, "3", True):
        assert _code(lambda: validate(rating, bad, 105.0)) == "invalid_choice"


# -- rate limits ----------------------------------------------------------------------------------------------
def test_token_buckets() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=3, clock=lambda: now[0])
    assert [buckets.allow("t") for _ in range(3)] == [None, None, None]
    wait = buckets.allow("t")
    assert wait == pytest.approx(0.5)
    assert buckets.allow("other") is None  # per ticket
    now[0] = 0.5
    assert buckets.allow("t") is None
    assert buckets.allow("t") is not None


def test_token_buckets_stay_bounded() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=1.0, burst=2, max_buckets=100, clock=lambda: now[0])
    for i in range(1000):
        now[0] += 0.001
        buckets.allow(f"t{i}")
    assert len(buckets) <= 100


# -- notification cursor ----------------------------------------------------------------------------------------
def test_cursor_round_trip_and_refusals() -> None:
    assert decode_cursor(encode_cursor(12.5, ["n_1", "n_2"])) == (12.5, {"n_1", "n_2"})
    assert decode_cursor(encode_cursor(1764166400.123456, [])) == (1764166400.123456, set())
    for bad in ("garbage", "nan", "inf~n_1", "x" * 10_000):
        assert _code(lambda: decode_cursor(bad)) == "bad_request"


# -- the cache ------------------------------------------------------------------------------------------------
async def test_ttl_cache_expires_and_invalidates(autojump_clock: trio.testing.MockClock) -> None:
    cache: TTLCache[int] = TTLCache(ttl=1.0)
    cache.put("k", 1)
    assert cache.get("k") == (True, 1)
    await trio.sleep(1.01)
    assert cache.get("k") == (False, None)
    cache.put("k", 2)
    cache.invalidate("k")
    assert cache.get("k") == (False, None)


class Loader:
    """A load that takes 0.1 s and counts its calls; the first ``failures`` of them raise."""

    def __init__(self, value: int, *, failures: int = 0) -> None:
        self.value, self.failures, self.calls = value, failures, 0

    async def __call__(self) -> int:
        self.calls += 1
        await trio.sleep(0.1)
        if self.calls <= self.failures:
            raise RuntimeError("this load fails")
        return self.value


async def test_cache_loads_once_for_concurrent_callers(autojump_clock: trio.testing.MockClock) -> None:
    cache: TTLCache[int] = TTLCache(ttl=10.0)
    load = Loader(7)
    results: list[int] = []
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(lambda: _append(results, cache.get_or_load("k", load)))
    assert results == [7] * 10 and load.calls == 1


async def _append(results: list[int], awaitable) -> None:
    results.append(await awaitable)


async def test_a_value_loaded_across_an_invalidation_is_not_kept(autojump_clock: trio.testing.MockClock) -> None:
    cache: TTLCache[int] = TTLCache(ttl=10.0)

    async def slow_load() -> int:
        await trio.sleep(1)
        return 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cache.get_or_load, "k", slow_load)
        await trio.sleep(0.5)
        cache.invalidate("k")  # the change happened while the old value was being read
    assert cache.get("k") == (False, None)


async def test_failed_load_lets_waiters_load_themselves(autojump_clock: trio.testing.MockClock) -> None:
    cache: TTLCache[int] = TTLCache(ttl=10.0)
    flaky = Loader(5, failures=1)
    got: list[int] = []
    failures: list[BaseException] = []

    async def first() -> None:
        try:
            await cache.get_or_load("k", flaky)
        except RuntimeError as exc:
            failures.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        await trio.sleep(0.01)
        nursery.start_soon(lambda: _append(got, cache.get_or_load("k", flaky)))
    assert len(failures) == 1 and got == [5]


def test_invalidation_kinds_reach_the_right_caches() -> None:
    async def main() -> None:
        caches = LocalCaches()
        caches.users.put("u1", "doc")
        caches.profiles.put("u1", "profile")
        caches.following.put("u1", ["u2"])
        caches.invalidate("following", ["u1"])
        assert caches.users.get("u1") == (True, "doc")
        assert caches.following.get("u1")[0] is False and caches.profiles.get("u1")[0] is False

    trio.run(main)
