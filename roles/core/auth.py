"""Who is calling: a director (configured key) or a viewer (signed ticket), checked without a network
call; and the per-user rate limit applied to viewers.

401 for anything that is not a valid credential (missing, malformed, forged, expired, or a gatekeeper
queue token); 403 for a valid viewer ticket on a director endpoint, or a director on an endpoint that
needs a user (``/v1/me``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from quart import request

from playtotv.auth import DEFAULT_ROLE, DirectorKeys, ExpiredTicket, InvalidTicket, KeyRing, Ticket, bearer_token
from playtotv.gameplay.ratelimit import TokenBuckets
from playtotv.protocol.errors import ApiError


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
            ticket = self.ring.verify(token)  # raises InvalidTicket / ExpiredTicket
            if len(self._verified) >= self.max_entries:
                self._verified.clear()  # rare and cheap to refill: simpler than LRU bookkeeping per hit
            self._verified[token] = ticket
        elif ticket.expired(time.time()):
            del self._verified[token]
            raise ExpiredTicket(ticket)
        return ticket


class Authenticator:
    def __init__(self, tickets: KeyRing, director_keys: DirectorKeys, limits: TokenBuckets) -> None:
        self.tickets = VerifiedTickets(tickets)
        self.director_keys = director_keys
        self.limits = limits

    def caller(self) -> Caller:
        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            raise ApiError("unauthorized", "missing credentials (Authorization: Bearer <ticket or key>)")
        if self.director_keys.check(token):
            return DIRECTOR
        try:
            ticket = self.tickets.verify(token)
        except ExpiredTicket:
            raise ApiError("unauthorized", "ticket expired: ask the gatekeeper for a new one") from None
        except InvalidTicket as exc:
            raise ApiError("unauthorized", f"invalid credentials ({exc})") from None
        if ticket.role != DEFAULT_ROLE:
            raise ApiError("unauthorized", "not a viewer ticket")
        return Caller(user_id=ticket.user_id, director=False)

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
