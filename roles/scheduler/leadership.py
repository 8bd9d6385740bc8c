"""Scheduler leadership: exactly one instance holds the lease (with a fencing token) at a time; the
others stand by and take over within the lease TTL when the leader dies (docs/reliability.md #14).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from playtotv.broker.base import BrokerUnavailable
from playtotv.logs import event

if TYPE_CHECKING:
    from playtotv.context import NodeContext

log = logging.getLogger("playtotv.scheduler")

LEASE_NAME = "scheduler-leader"


class Leadership:
    """Keeps trying to hold the leader lease; renews at a third of its TTL so one slow renewal does not
    lose it. ``token`` is the fencing token while leading, else None."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.ttl = ctx.settings.scheduler.lease_ttl
        self.token: int | None = None
        self.changed = trio.Event()

    def _set(self, token: int | None) -> None:
        if token != self.token:
            event(log, "leadership " + ("taken" if token is not None else "lost"), token=token)
            self.token = token
            self.ctx.load["leader"] = 1.0 if token is not None else 0.0
            self.changed.set()
            self.changed = trio.Event()

    async def run(self) -> None:
        try:
            while not self.ctx.draining.is_set():
                try:
                    with trio.fail_after(self.ttl / 3):
                        token = await self.ctx.broker.acquire_lease(LEASE_NAME, self.ctx.node_id, self.ttl)
                except (BrokerUnavailable, trio.TooSlowError):
                    token = None  # cannot prove we still hold it: stop acting as leader
                self._set(token)
                with trio.move_on_after(self.ttl / 3):
                    await self.ctx.draining.wait()
        finally:
            self._set(None)
            with trio.move_on_after(1.0) as scope:
                scope.shield = True
                try:
                    await self.ctx.broker.release_lease(LEASE_NAME, self.ctx.node_id)
                except BrokerUnavailable:
                    pass  # it expires by itself
