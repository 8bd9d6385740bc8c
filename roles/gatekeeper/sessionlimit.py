"""The per-address limit on new sessions: one client cannot fill the platform by itself.

Each ``POST /v1/session`` takes a token from its client address's bucket (``gatekeeper.session_rate``
per second, bursts of ``gatekeeper.session_burst``); an empty bucket is answered 429 ``rate_limited``
with ``Retry-After``. Every request counts, returning waiting clients and resumes too: each can end in a
new session. Checked at the gatekeeper's front (``fastpath.py``), before any decision. In memory, per
gatekeeper process, bounded (``TokenBuckets``).

The address: the connection's peer, unless the peer is a trusted reverse proxy
(``gatekeeper.trusted_proxies``); then the nearest untrusted address of ``X-Forwarded-For``, read from
the right (each proxy appends the address it saw; what is left of the nearest untrusted entry is the
client's own say). IPv6 clients count per /64, the block one subscriber is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

from playtotv.gameplay.ratelimit import TokenBuckets
from playtotv.settings import GatekeeperSettings

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address

#: The prefix one IPv6 subscriber gets: counting per address would let one client use 2^64 of them.
IPV6_CLIENT_PREFIX = 64
#: ``X-Forwarded-For`` entries looked at: a real chain of proxies is a handful.
MAX_FORWARDED_HOPS = 16
UNKNOWN = "unknown"


def networks(values: Iterable[str]) -> list[Network]:
    """Parse addresses or CIDR networks (settings.check_deployment has vetted them)."""
    return [ip_network(value, strict=False) for value in values]


def _address(text: str) -> Address | None:
    try:
        address = ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's IPv4 client is that IPv4 client
    return address


class ClientAddresses:
    def __init__(self, trusted_proxies: list[Network]) -> None:
        self.trusted = trusted_proxies

    def _is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted)

    def client(self, peer: str | None, forwarded_for: str | None) -> Address | None:
        """The client's address, or None when the peer has none we can read."""
        address = _address(peer) if peer else None
        if address is None or not forwarded_for or not self._is_trusted(address):
            return address
        for entry in reversed(forwarded_for.split(",")[-MAX_FORWARDED_HOPS:]):
            hop = _address(entry)
            if hop is None:
                return address  # garbage from here on: the last proxy we trust saw this one
            address = hop
            if not self._is_trusted(hop):
                return hop
        return address

    @staticmethod
    def key(address: Address | None) -> str:
        if address is None:
            return UNKNOWN
        if isinstance(address, IPv6Address):
            return str(ip_network(f"{address}/{IPV6_CLIENT_PREFIX}", strict=False))
        return str(address)


class SessionLimit:
    def __init__(self, settings: GatekeeperSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.buckets = (TokenBuckets(settings.session_rate, settings.session_burst, clock=clock)
                        if settings.session_rate > 0 else None)
        self.addresses = ClientAddresses(networks(settings.trusted_proxies))
        self.exempt = networks(settings.session_rate_exempt)

    def wait(self, scope: dict[str, Any]) -> float | None:
        """None when the request may go on; else the seconds until its address may ask again."""
        if self.buckets is None:
            return None
        client = scope.get("client")
        forwarded = b",".join(v for k, v in scope.get("headers", ()) if k == b"x-forwarded-for")
        address = self.addresses.client(client[0] if client else None, forwarded.decode("latin-1") or None)
        if address is not None and any(address in network for network in self.exempt):
            return None
        return self.buckets.allow(self.addresses.key(address))
