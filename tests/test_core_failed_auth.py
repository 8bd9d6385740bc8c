"""Wrong director keys are limited per client address and logged, never the key itself."""

from __future__ import annotations

import logging

import trio

from playtotv.roles.core.callers import FAILED_AUTH_LOG_INTERVAL, FailedCredentials
from tests.playkit import running

TEST_BOUND = 30.0
GUESSES = [f"dk_guess_number_{i:04d}" for i in range(5)]


async def test_wrong_director_keys_are_limited_per_address_and_logged_without_the_key(caplog) -> None:
    caplog.set_level(logging.INFO)
    with trio.fail_after(TEST_BOUND):
        async with running(None, roles=("core",), closer=False, core_failed_auth_burst="3") as play:
            shows = "/v1/shows"
            codes = []
            for guess in GUESSES:
                r = await play.http.post(shows, json={"title": "T"}, headers={"Authorization": f"Bearer {guess}"})
                codes.append(r.status_code)
            assert codes == [401, 401, 401, 429, 429]
            refused = r.json()["error"]
            assert refused["code"] == "rate_limited" and refused["retry_after"] > 0
            assert r.headers["Retry-After"]
            # Past the limit even the right key is not compared: guessing cannot go on at full speed.
            r = await play.http.post(shows, json={"title": "T"}, headers=play.director)
            assert r.status_code == 429
            # Viewers behind the same address keep working: a genuine ticket is not a guess.
            r = await play.http.get("/v1/me", headers=play.viewer("u_same_nat"))
            assert r.status_code == 200, r.text
    warnings = [rec for rec in caplog.records if rec.name == "playtotv.core.auth"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING  # once per interval
    assert warnings[0].fields["failed"] == 1 and "127.0.0.1=1" in warnings[0].fields["busiest"]
    assert not any(guess in caplog.text for guess in GUESSES)


def test_failures_refill_and_are_logged_once_per_interval(caplog) -> None:
    now = [100.0]
    failures = FailedCredentials(rate=0.5, burst=2, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="playtotv.core.auth")
    failures.failed("10.0.0.1")
    failures.failed("10.0.0.1")
    assert failures.blocked("10.0.0.1") == 2.0  # one token back in 2 s
    assert failures.blocked("10.0.0.2") is None  # another address is not affected
    now[0] += 2.0
    assert failures.blocked("10.0.0.1") is None
    assert len(caplog.records) == 1  # the first failure; the rest wait for the interval
    now[0] += FAILED_AUTH_LOG_INTERVAL
    failures.failed("10.0.0.3")
    assert len(caplog.records) == 2
    counts = caplog.records[1].fields
    assert (counts["failed"], counts["rate_limited"], counts["addresses"]) == (2, 1, 2)
