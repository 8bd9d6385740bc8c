"""The name a viewer gave the gatekeeper (``POST /v1/session {"name"}``) becomes its profile's name here.

The gatekeeper decides admissions without the store (docs/architecture.md §5), so it does not write users: the name
travels in the signed ticket, and core adopts it on the first request of each ticket it sees, before the
request is served, so the profile, leaderboard or answer it handles already carries it. A ticket issued
before the name last changed (a rename, a newer ticket) changes nothing (``profile.adopt_name``).

Each ticket costs one store read per process, once: later requests with it are a set lookup. A store that
is down only postpones the adoption to the ticket's next request; the request itself goes on (answers must
not depend on the store).
"""

from __future__ import annotations

from quart import request

from playtotv.broker.base import BrokerUnavailable
from playtotv.credentials import InvalidTicket, bearer_token
from playtotv.gameplay import profile
from playtotv.gameplay.service import Gameplay
from playtotv.store.base import StoreUnavailable

from .callers import VerifiedTickets

#: Ticket sessions remembered as done, per process; past this the set starts over (each ticket then costs
#: one more store read, nothing else).
MAX_REMEMBERED = 100_000


class TicketNames:
    def __init__(self, gameplay: Gameplay, tickets: VerifiedTickets, max_entries: int = MAX_REMEMBERED) -> None:
        self.gameplay = gameplay
        self.tickets = tickets
        self.max_entries = max_entries
        self._done: set[str] = set()

    async def before_request(self) -> None:
        """A Quart ``before_request`` hook; invalid credentials are left to the endpoint to refuse."""
        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            return
        try:
            ticket = self.tickets.verify(token)
        except InvalidTicket:
            return
        if ticket.name is None or ticket.session_id in self._done:
            return
        try:
            settled = await profile.adopt_name(self.gameplay, ticket.user_id, ticket.name, ticket.issued_at)
        except (StoreUnavailable, BrokerUnavailable):
            return  # the next request with this ticket tries again
        if settled:
            if len(self._done) >= self.max_entries:
                self._done.clear()
            self._done.add(ticket.session_id)

    def forget(self) -> None:
        """Look at every ticket again (as a process that never saw them would)."""
        self._done.clear()
