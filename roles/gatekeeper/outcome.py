"""What ``Gatekeeper.decide`` returns for one ``POST /v1/session``: a refusal or a place."""

from __future__ import annotations

from dataclasses import dataclass

from playtotv.protocol.rest import SessionRequest


@dataclass(frozen=True, slots=True)
class Refusal:
    """A 503 ``at_capacity``, encoded once: the route and the fast path send the same bytes."""

    body: bytes
    retry_after: str  # the Retry-After header: whole seconds


@dataclass(frozen=True, slots=True)
class Place:
    """Room for the request: what admitting it needs."""

    request: SessionRequest
    queue_id: str
