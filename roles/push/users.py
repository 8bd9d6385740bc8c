"""Connections per user on one push node: the cap, and the distinct users the node reports as sessions.

A viewer holds one WebSocket (or one long poll at a time); a page open in a few tabs holds a few. One
ticket opening hundreds would hold as many sockets and count as hundreds of admitted sessions, so the
node refuses a user's connections past ``push.max_connections_per_user`` (WebSockets and waiting long
polls together), and reports users, not connections, as the sessions the gatekeeper counts. Sans-io.
"""

from __future__ import annotations


class UserSlots:
    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._held: dict[str, int] = {}

    def __len__(self) -> int:
        """Distinct users holding at least one connection."""
        return len(self._held)

    @property
    def connections(self) -> int:
        return sum(self._held.values())

    def full(self, user_id: str) -> bool:
        return self._held.get(user_id, 0) >= self.per_user

    def acquire(self, user_id: str) -> bool:
        """Take one of the user's slots; False (nothing taken) when it holds them all."""
        held = self._held.get(user_id, 0)
        if held >= self.per_user:
            return False
        self._held[user_id] = held + 1
        return True

    def release(self, user_id: str) -> None:
        held = self._held.get(user_id, 0)
        if held <= 1:
            self._held.pop(user_id, None)
        else:
            self._held[user_id] = held - 1

    def refusal(self) -> str:
        return f"too many connections for this user on this node (at most {self.per_user})"
