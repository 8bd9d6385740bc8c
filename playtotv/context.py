"""``NodeContext``: what every role of a node process gets (docs/architecture.md §3).

Configuration, backends, credentials, metrics, the node's registration and health, and the live objects
of the roles running in this process. ``playtotv.node`` builds one per process and runs the roles on it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import trio

from playtotv.broker.base import Broker, BrokerUnavailable
from playtotv.credentials import DirectorKeys, KeyRing
from playtotv.logs import event
from playtotv.metrics import Metrics
from playtotv.registry.base import NodeInfo, Registry
from playtotv.settings import Settings
from playtotv.store.base import Store

if TYPE_CHECKING:
    # Types only: playtotv never imports the roles at run time (protocol <- playtotv <- roles).
    from playtotv.gameplay.service import Gameplay
    from playtotv.roles.core import CoreApi
    from playtotv.roles.gatekeeper import Gatekeeper
    from playtotv.roles.push import PushRuntime
    from playtotv.roles.scheduler import Scheduler
    from playtotv.roles.worker import Worker

log = logging.getLogger("playtotv.node")

#: A dependency check that takes longer than this counts as a failure (readiness must answer fast).
HEALTH_CHECK_TIMEOUT = 2.0
#: Back-off between registration attempts while Redis is unreachable (docs/reliability.md #19).
REGISTER_BACKOFF_MIN = 0.1
REGISTER_BACKOFF_MAX = 2.0


def _ignore_listening(role: str, url: str) -> None:
    pass


@dataclass
class NodeContext:
    """What every role gets: configuration, backends, credentials, metrics and the node's registration."""

    settings: Settings
    node_id: str
    roles: list[str]
    broker: Broker
    registry: Registry
    store: Store
    tickets: KeyRing
    director_keys: DirectorKeys
    metrics: Metrics
    #: Set when the node starts draining: listeners stop accepting, roles wind down.
    draining: trio.Event = field(default_factory=trio.Event)
    endpoints: dict[str, str] = field(default_factory=dict)
    load: dict[str, float] = field(default_factory=dict)
    qos: dict[str, float] = field(default_factory=dict)
    #: Nodes this one found unreachable (the scheduler's probes); the gatekeeper leaves them out of its lists.
    unreachable: set[str] = field(default_factory=set)
    checks: dict[str, bool] = field(default_factory=lambda: {"broker": False, "store": False, "registered": False})
    started_at: float = field(default_factory=time.time)
    #: Called with (role, url) as each listener comes up (``run_node``'s ``on_listening``).
    on_listening: Callable[[str, str], None] = _ignore_listening
    #: Requests being served now, per HTTP listener (``playtotv.http``); the heartbeat reports the total.
    inflight: dict[str, int] = field(default_factory=dict)
    # The live objects of the roles this process runs, set by each role's ``run`` (None for roles it does
    # not run): the load report, tests and in-process tools reach batchers, caches and counters here.
    gameplay: Gameplay | None = None
    core: CoreApi | None = None
    push: PushRuntime | None = None
    worker: Worker | None = None
    scheduler: Scheduler | None = None
    gatekeeper: Gatekeeper | None = None
    _deregistered: bool = False

    # -- registration ---------------------------------------------------------------------------------
    def node_info(self) -> NodeInfo:
        return NodeInfo(
            id=self.node_id, roles=list(self.roles), endpoints=dict(self.endpoints), load=dict(self.load),
            qos=dict(self.qos), unreachable=sorted(self.unreachable), started_at=self.started_at,
        )

    async def announce(self) -> None:
        """Heartbeat now, retrying with back-off until the registry accepts it.

        Roles call this after they listen and before ``task_status.started()``: a node that cannot
        register is not ready, and waits rather than crash (docs/reliability.md #19)."""
        delay = REGISTER_BACKOFF_MIN
        while True:
            if await self._heartbeat_once():
                return
            await trio.sleep(delay)
            delay = min(delay * 2, REGISTER_BACKOFF_MAX)

    async def _heartbeat_once(self) -> bool:
        if self._deregistered:
            return True
        try:
            with trio.fail_after(HEALTH_CHECK_TIMEOUT):
                await self.registry.heartbeat(self.node_info(), ttl=self.settings.node.heartbeat_ttl)
        except (BrokerUnavailable, trio.TooSlowError) as e:
            if self.checks["registered"]:
                event(log, "registration lost", error=type(e).__name__)
            self.checks["registered"] = False
            return False
        self.checks["registered"] = True
        return True

    async def deregister(self) -> None:
        self._deregistered = True
        self.checks["registered"] = False
        with trio.move_on_after(HEALTH_CHECK_TIMEOUT):
            try:
                await self.registry.deregister(self.node_id)
            except BrokerUnavailable:
                pass  # its TTL removes it anyway

    @property
    def ready(self) -> bool:
        return all(self.checks.values()) and not self.draining.is_set()

    # -- endpoints ------------------------------------------------------------------------------------
    def public_url(self, bound_url: str, path: str = "") -> str:
        """``http://127.0.0.1:54321`` as bound → the URL clients should use (node.advertise_host)."""
        parts = urlsplit(bound_url)
        host = self.settings.node.advertise_host or parts.hostname or "127.0.0.1"
        if host in ("0.0.0.0", "::"):
            import socket

            host = socket.gethostname()
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return urlunsplit((parts.scheme, f"{host}:{parts.port}", path, "", ""))
