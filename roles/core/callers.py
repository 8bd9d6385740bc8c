"""Who is calling: a director (configured key) or a viewer (signed ticket), checked without a network
call; the per-user rate limit applied to viewers; and the per-address limit on failed credentials.

401 for anything that is not a valid credential (missing, malformed, forged, expired, or a gatekeeper
queue token); 403 for a valid viewer ticket on a director endpoint, or a director on an endpoint that
needs a user (``/v1/me``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from quart import request

from playtotv.credentials import DirectorKeys, ExpiredTicket, InvalidTicket, KeyRing, Ticket, WrongPurpose, bearer_token
from playtotv.gameplay.ratelimit import TokenBuckets
from playtotv.protocol.errors import ApiError

log = logging.getLogger("playtotv.core.auth")


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str | None  # None for a director
    director: bool

    def require_user(self) -> str:
        if self.user_id is None:
            raise ApiError("forbidden", "this endpoint needs a viewer ticket")
        return self.user_id


DIRECTOR = Caller(user_id=None, director=True)

#: Tokens whose signature was verified, kept per process: a viewer sends many requests with one ticket
#: (sticky to this core), and the HMAC and decoding are the larger part of authenticating one. Keyed by
#: the exact token string, so only a token already proven genuine can hit; expiry is checked every time.
VERIFIED_TICKETS_MAX = 100_000


class VerifiedTickets:
    def __init__(self, ring: KeyRing, max_entries: int = VERIFIED_TICKETS_MAX) -> None:
        self.ring = ring
        self.max_entries = max_entries
        self._verified: dict[str, Ticket] = {}

    def verify(self, token: str) -> Ticket:
        ticket = self._verified.get(token)
        if ticket is None:
            ticket = self.ring.verify(token)  # a viewer's, else InvalidTicket / WrongPurpose / ExpiredTicket
            if len(self._verified) >= self.max_entries:
                self._verified.clear()  # rare and cheap to refill: simpler than LRU bookkeeping per hit
            self._verified[token] = ticket
        elif ticket.expired(time.time()):
            del self._verified[token]
            raise ExpiredTicket(ticket)
        return ticket


#: Refused credentials are logged at most once per this many seconds, with counts (never the credential).
FAILED_AUTH_LOG_INTERVAL = 10.0
#: Addresses counted between two log lines; beyond, failures are counted but not by address (memory bound).
FAILED_AUTH_LOGGED_ADDRESSES = 1000


class FailedCredentials:
    """Credentials that were neither a director key nor a genuine ticket, per client address.

    Each failure takes a token from the address's bucket; once it is empty, director keys from that
    address are refused without being compared (``blocked``), so guessing runs at the refill rate at most.
    Failures and refusals are logged as one warning per interval: counts and the busiest addresses."""

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.buckets = TokenBuckets(rate, burst, clock=clock)
        self._clock = clock
        self._by_address: Counter[str] = Counter()
        self._failed = 0
        self._refused = 0
        self._next_log = 0.0

    def blocked(self, address: str) -> float | None:
        """None, or the seconds until ``address`` may present a director key again."""
        wait = self.buckets.wait(address)
        if wait is not None:
            self._refused += 1
            self._note(address)
        return wait

    def failed(self, address: str) -> None:
        self.buckets.allow(address)
        self._failed += 1
        self._note(address)

    def _note(self, address: str) -> None:
        if address in self._by_address or len(self._by_address) < FAILED_AUTH_LOGGED_ADDRESSES:
            self._by_address[address] += 1
        now = self._clock()
        if now < self._next_log:
            return
        busiest = ",".join(f"{a}={n}" for a, n in self._by_address.most_common(3))
        log.warning("refused credentials", extra={"fields": {
            "failed": self._failed, "rate_limited": self._refused, "addresses": len(self._by_address),
            "busiest": busiest, "interval_s": FAILED_AUTH_LOG_INTERVAL}})
        self._by_address.clear()
        self._failed = self._refused = 0
        self._next_log = now + FAILED_AUTH_LOG_INTERVAL


class Authenticator:
    def __init__(self, tickets: KeyRing, director_keys: DirectorKeys, limits: TokenBuckets,
                 failures: FailedCredentials) -> None:
        self.tickets = VerifiedTickets(tickets)
        self.director_keys = director_keys
        self.limits = limits
        self.failures = failures

    def caller(self) -> Caller:
        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            raise ApiError("unauthorized", "missing credentials (Authorization: Bearer <ticket or key>)")
        # The ticket first: a genuine one is accepted whatever its address did before (a guesser behind
        # the same NAT must not lock viewers out), and a forged one cannot be guessed anyway.
        try:
            ticket = self.tickets.verify(token)
        except ExpiredTicket:
            raise ApiError("unauthorized", "ticket expired: ask the gatekeeper for a new one") from None
        except WrongPurpose as exc:
            raise ApiError("unauthorized", f"invalid credentials ({exc})") from None
        except InvalidTicket as exc:
            return self._director(token, exc)
        return Caller(user_id=ticket.user_id, director=False)

    def _director(self, token: str, not_a_ticket: InvalidTicket) -> Caller:
        address = request.remote_addr or "unknown"
        wait = self.failures.blocked(address)
        if wait is not None:
            raise ApiError("rate_limited", "too many failed credentials from this address",
                           retry_after=round(wait, 3))
        if self.director_keys.check(token):
            return DIRECTOR
        self.failures.failed(address)
        raise ApiError("unauthorized", f"invalid credentials ({not_a_ticket})")

    def viewer(self) -> Caller:
        """A viewer (rate limited) or a director (viewer reads are open to directors).

        The bucket is the user's, not the ticket's: the gatekeeper hands the same user a fresh ticket on
        every resume, and one bucket per ticket would multiply the limit by the tickets a client collects.
        """
        caller = self.caller()
        if caller.user_id is not None:
            wait = self.limits.allow(caller.user_id)
            if wait is not None:
                raise ApiError("rate_limited", "too many requests for this user", retry_after=round(wait, 3))
        return caller

    def director(self) -> Caller:
        caller = self.caller()
        if not caller.director:
            raise ApiError("forbidden", "this endpoint needs a director key")
        return caller
