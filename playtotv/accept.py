"""Accepting TCP connections on every listener of a node (HTTP and WebSocket): caps, resource errors.

``serve_tcp`` is ``trio.serve_listeners`` with two additions:

* Caps. A listener holds at most ``max_open`` connections, and at most ``max_per_address`` from one
  client address (0: no cap). A connection over a cap is closed as soon as it is accepted, so a flood on
  one listener cannot take the descriptors every other listener of the process needs, nor one client
  every place of a listener. Refusals are counted in ``playtotv_connections_refused`` and logged at most
  once per ``LOG_INTERVAL``.
* Resource errors. When ``accept()`` fails for lack of resources (EMFILE, ENFILE, ENOMEM, ENOBUFS) the
  listener waits ``ACCEPT_RETRY`` and tries again, like trio does (docs/reliability.md #6), but says so once
  per ``LOG_INTERVAL`` with a count, not with a traceback per attempt: trio's ten tracebacks a second per
  listener filled a megabyte of log in twenty seconds while telling nothing new.

Each connection's handler runs in ``handler_nursery``; its stream is closed when the handler returns.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from playtotv.context import NodeContext

log = logging.getLogger("playtotv.accept")

#: accept(2) errors that mean "out of resources for now", not "this listener is broken" (trio's set).
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: After such an error the listener waits this long before accepting again (trio's value).
ACCEPT_RETRY = 0.1
#: A listener logs its accept failures, and its refusals, at most once per this many seconds.
LOG_INTERVAL = 10.0

Handler = Callable[[trio.SocketStream], Awaitable[object]]


@dataclass(frozen=True)
class ConnectionLimits:
    #: Connections the listener holds at once (0: no cap).
    max_open: int = 0
    #: Connections one client address holds on the listener at once (0: no cap).
    max_per_address: int = 0


class Occurrences:
    """Counts something that happens often and says when to report it: at most once per ``interval``
    (the first time at once), with how many times it happened since the last report."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self._count = 0
        self._reported_at = float("-inf")

    def add(self) -> int:
        """Count one; the number to report now, or 0 when the last report is too recent."""
        self._count += 1
        now = trio.current_time()
        if now - self._reported_at < self.interval:
            return 0
        count, self._count, self._reported_at = self._count, 0, now
        return count


@dataclass
class ConnectionGate:
    """The connections one listener holds, by client address, against its limits."""

    name: str
    limits: ConnectionLimits
    #: Called with "listener_full" or "address_full" for each refused connection (a metrics counter).
    on_refused: Callable[[str], None] = lambda reason: None
    #: Called for each accept that failed for lack of resources (a metrics counter).
    on_accept_error: Callable[[], None] = lambda: None
    open: int = 0
    by_address: dict[str, int] = field(default_factory=dict)
    _refusals: Occurrences = field(default_factory=Occurrences)
    _failures: Occurrences = field(default_factory=Occurrences)

    def admit(self, address: str) -> bool:
        held = self.by_address.get(address, 0)
        if self.limits.max_open and self.open >= self.limits.max_open:
            self._refuse("listener_full", address)
            return False
        if self.limits.max_per_address and held >= self.limits.max_per_address:
            self._refuse("address_full", address)
            return False
        self.open += 1
        self.by_address[address] = held + 1
        return True

    def release(self, address: str) -> None:
        self.open -= 1
        held = self.by_address[address] - 1
        if held:
            self.by_address[address] = held
        else:
            del self.by_address[address]  # the table holds only addresses with connections open

    def _refuse(self, reason: str, address: str) -> None:
        self.on_refused(reason)
        count = self._refusals.add()
        if count:
            log.warning("connections refused at the cap", extra={"fields": {
                "listener": self.name, "refused": count, "last_reason": reason, "last_address": address,
                "max_open": self.limits.max_open, "max_per_address": self.limits.max_per_address}})

    def accept_failed(self, error: OSError) -> None:
        self.on_accept_error()
        count = self._failures.add()
        if count:
            code = errno.errorcode.get(error.errno or 0, str(error.errno))
            log.error(f"accept failed ({code}: {os.strerror(error.errno or 0)}); retrying every {ACCEPT_RETRY} s",
                      extra={"fields": {"listener": self.name, "failures": count,
                                        "log_interval_s": self._failures.interval}})


def peer_address(stream: trio.SocketStream) -> str | None:
    """The client's address (host only: its ports are many), or None once it is gone."""
    try:
        name = stream.socket.getpeername()
    except OSError:
        return None
    return name[0] if isinstance(name, tuple) else str(name)


async def serve_tcp(
    handler: Handler,
    listeners: list[trio.SocketListener],
    gate: ConnectionGate,
    *,
    handler_nursery: trio.Nursery,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on every listener (one gate for all of them: they are one bind) until cancelled; the
    listeners are closed on the way out."""
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept_forever, listener, handler, gate, handler_nursery)
        task_status.started()


async def _accept_forever(listener: trio.SocketListener, handler: Handler, gate: ConnectionGate,
                          handler_nursery: trio.Nursery) -> None:
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as error:
                if error.errno not in RESOURCE_ERRNOS:
                    raise
                gate.accept_failed(error)
                await trio.sleep(ACCEPT_RETRY)
                continue
            address = peer_address(stream)
            if address is None or not gate.admit(address):
                await trio.aclose_forcefully(stream)
                continue
            handler_nursery.start_soon(_run_handler, handler, stream, gate, address)


async def _run_handler(handler: Handler, stream: trio.SocketStream, gate: ConnectionGate, address: str) -> None:
    try:
        await handler(stream)
    finally:
        gate.release(address)
        await trio.aclose_forcefully(stream)


def node_gate(ctx: NodeContext, name: str, max_open: int) -> ConnectionGate:
    """The gate of one of the node's listeners: ``max_open`` for it, the node's per-address cap, and the
    node's metrics."""
    metrics = ctx.metrics
    return ConnectionGate(
        name, ConnectionLimits(max_open, ctx.settings.node.max_connections_per_address),
        on_refused=lambda reason: metrics.connections_refused.labels(name, reason).inc(),
        on_accept_error=metrics.accept_errors.labels(name).inc,
    )
