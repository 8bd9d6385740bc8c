"""Tickets and director keys (docs/architecture.md §7): verified locally by core and push, no network call.

A ticket is ``base64url(payload) "." base64url(signature)`` without padding, where the payload is a
compact msgpack array (:class:`Ticket`) and the signature is HMAC-SHA256 over a domain prefix plus the
payload bytes, under the key named by the payload's ``kid``. A :class:`KeyRing` signs with one active key
and verifies with all of them, so a secret can be rotated without logging anyone out: add the new secret
as active, keep the old one until the longest ticket it signed has expired, then drop it.

Failures are a small hierarchy (:class:`InvalidTicket`, :class:`ExpiredTicket`); their messages say what
was wrong but never include the token or any secret, so they are safe to log and to return to clients.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping

import msgspec

#: Longer tokens are refused before any decoding: a real ticket is ~150 characters, and the bound keeps
#: an attacker from making us base64-decode or hash megabytes per request.
MAX_TOKEN_CHARS = 1024

#: Bound on a director key (or any bearer candidate) we are willing to hash.
MAX_DIRECTOR_KEY_CHARS = 1024

#: HMAC-SHA256 keys shorter than this are guessable. Enforced where configuration is validated (settings
#: call :func:`check_secret`, so the error names the key); KeyRing itself only refuses empty secrets, so
#: tests and tools can build throwaway rings freely.
MIN_SECRET_BYTES = 16

#: Director keys shorter than this are guessable; enforced where configuration is validated, like secrets.
MIN_DIRECTOR_KEY_CHARS = 16

#: Signed along with the payload: a signature made for anything else (another token type, another version
#: of this format) can never verify as a ticket.
_DOMAIN = b"playtotv.ticket.v1\x00"

_SIGNATURE_BYTES = hashlib.sha256().digest_size
#: 8 characters of base64url: a short, stable name derived from the secret so every node agrees on it
#: without configuring key ids separately.
_KID_BYTES = 6

#: What a ticket is for (``Ticket.role``). Every endpoint accepts only its own purpose, checked in
#: ``KeyRing.verify`` so no endpoint can forget it: a viewer's session ticket (core, push) ...
VIEWER_ROLE = "viewer"
#: ... or the gatekeeper's waiting-room token, which proves a place in the queue and never a session.
QUEUE_ROLE = "queue"
DEFAULT_ROLE = VIEWER_ROLE


class Ticket(msgspec.Struct, array_like=True, frozen=True, kw_only=True):
    """What a ticket asserts. ``array_like`` keeps the msgpack payload compact (no field names)."""

    kid: str
    user_id: str
    session_id: str
    issued_at: float
    expires_at: float
    role: str = DEFAULT_ROLE
    #: The display name the viewer gave the gatekeeper (core makes it the profile's name); None: none given.
    name: str | None = None

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at


class InvalidTicket(Exception):
    """Malformed, forged, or signed by a key we do not hold: answer 401 ``unauthorized``."""


class WrongPurpose(InvalidTicket):
    """Genuine, but made for another purpose (a queue token shown as a viewer ticket, or the reverse)."""


class ExpiredTicket(InvalidTicket):
    """Genuine but expired (beyond any allowed window). ``ticket`` is the verified payload, so the
    gatekeeper can still honour a ``resume`` of it within its own resume window."""

    def __init__(self, ticket: Ticket, message: str = "ticket expired"):
        super().__init__(message)
        self.ticket = ticket


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Ticket)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    # Strict alphabet check first: b64decode would silently skip characters outside it, which would let
    # many different strings decode to the same ticket.
    if not text or not text.isascii() or not _B64URL_CHARS.issuperset(text):
        raise InvalidTicket("malformed ticket")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidTicket("malformed ticket") from None
    # Only the canonical spelling is accepted (unused trailing bits zero), so one ticket has one token.
    if _b64encode(data) != text:
        raise InvalidTicket("malformed ticket")
    return data


_B64URL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _secret_bytes(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ValueError("ticket secret is empty")
    return key


def check_secret(secret: str | bytes) -> None:
    """Raise ``ValueError`` if ``secret`` is too short to sign tickets safely (for configuration checks).

    The message says how long it must be, never what it was.
    """
    if len(_secret_bytes(secret)) < MIN_SECRET_BYTES:
        raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes (see playtotv.credentials.generate_secret)")


def check_director_key(key: str) -> None:
    """Raise ``ValueError`` if ``key`` is too short to be a director key (for configuration checks).

    The message says how long it must be, never what it was.
    """
    if len(key) < MIN_DIRECTOR_KEY_CHARS:
        raise ValueError(f"every key must be at least {MIN_DIRECTOR_KEY_CHARS} characters "
                         "(see playtotv.credentials.generate_director_key)")


def key_id(secret: str | bytes) -> str:
    """The kid of a secret: a keyed hash prefix, so it names the key without revealing anything usable."""
    digest = hmac.new(_secret_bytes(secret), b"playtotv.kid", hashlib.sha256).digest()
    return _b64encode(digest[:_KID_BYTES])


class KeyRing:
    """Signs tickets with the active key; verifies tickets signed by any key in the ring.

    ``keys`` maps key id → secret; ``active_kid`` must be one of them. Most callers use
    :meth:`from_secrets`, which derives the ids from the secrets themselves.
    """

    def __init__(self, keys: Mapping[str, bytes], active_kid: str):
        if active_kid not in keys:
            raise ValueError(f"active key id {active_kid!r} is not in the key ring")
        self._keys = {kid: _secret_bytes(secret) for kid, secret in keys.items()}
        self.active_kid = active_kid

    @classmethod
    def from_secrets(cls, active: str | bytes, previous: Iterable[str | bytes] = ()) -> KeyRing:
        """A ring signing with ``active`` and still accepting tickets signed with ``previous`` secrets."""
        keys = {key_id(secret): _secret_bytes(secret) for secret in (*previous, active)}
        return cls(keys, key_id(active))

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def __repr__(self) -> str:
        # Never the secrets: this object ends up in reprs of contexts, tracebacks and debug logs.
        return f"KeyRing(kids={sorted(self._keys)!r}, active_kid={self.active_kid!r})"

    def _signature(self, secret: bytes, payload: bytes) -> bytes:
        return hmac.new(secret, _DOMAIN + payload, hashlib.sha256).digest()

    def issue(
        self,
        user_id: str,
        *,
        ttl: float,
        session_id: str | None = None,
        role: str = DEFAULT_ROLE,
        name: str | None = None,
        now: float | None = None,
    ) -> tuple[str, Ticket]:
        """Sign a new ticket for ``user_id`` valid ``ttl`` seconds; returns the token and its payload."""
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        issued_at = time.time() if now is None else now
        ticket = Ticket(
            kid=self.active_kid,
            user_id=user_id,
            session_id=session_id or secrets.token_urlsafe(9),
            issued_at=issued_at,
            expires_at=issued_at + ttl,
            role=role,
            name=name,
        )
        return self.sign(ticket), ticket

    def sign(self, ticket: Ticket) -> str:
        """The token for ``ticket``, signed with the active key (whatever ``ticket.kid`` said)."""
        if ticket.kid != self.active_kid:
            ticket = msgspec.structs.replace(ticket, kid=self.active_kid)
        payload = _encoder.encode(ticket)
        token = f"{_b64encode(payload)}.{_b64encode(self._signature(self._keys[self.active_kid], payload))}"
        if len(token) > MAX_TOKEN_CHARS:
            # Would be refused by verify(); fail here, where the oversized field is the caller's bug.
            raise ValueError(f"ticket longer than {MAX_TOKEN_CHARS} characters; shorten its ids")
        return token

    def verify(self, token: str, *, role: str = VIEWER_ROLE, now: float | None = None,
               allow_expired_for: float = 0.0) -> Ticket:
        """The ticket ``token`` carries, if its signature is ours, it was made for ``role`` and it is not
        expired.

        A ticket that expired less than ``allow_expired_for`` seconds ago is still returned (the caller
        sees ``ticket.expired()``); one that expired earlier raises :class:`ExpiredTicket`, which carries
        it. A genuine ticket of another purpose raises :class:`WrongPurpose`; anything else wrong raises
        :class:`InvalidTicket`. The signature and the purpose are checked before expiry, so an
        ``ExpiredTicket`` always holds a genuine payload of the purpose asked for.
        """
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise InvalidTicket("malformed ticket")
        payload_text, dot, signature_text = token.partition(".")
        if not dot:
            raise InvalidTicket("malformed ticket")
        payload = _b64decode(payload_text)
        signature = _b64decode(signature_text)
        if len(signature) != _SIGNATURE_BYTES:
            raise InvalidTicket("malformed ticket")
        # The payload is decoded before its signature is checked because it names the key (kid). That is
        # safe: it is at most ~760 bytes and msgspec validates it strictly against a flat Struct.
        try:
            ticket = _decoder.decode(payload)
        except (msgspec.ValidationError, msgspec.DecodeError):
            raise InvalidTicket("malformed ticket") from None
        secret = self._keys.get(ticket.kid)
        if secret is None:
            raise InvalidTicket("ticket signed with an unknown key")
        if not hmac.compare_digest(signature, self._signature(secret, payload)):
            raise InvalidTicket("bad ticket signature")
        if ticket.role != role:
            raise WrongPurpose(f"a {ticket.role} token is not a {role} ticket")
        current = time.time() if now is None else now
        if current >= ticket.expires_at + max(0.0, allow_expired_for):
            raise ExpiredTicket(ticket)
        return ticket


class DirectorKeys:
    """The configured director keys, checked in constant time.

    Both sides are hashed first, so every comparison is between 32-byte digests: the time taken says
    nothing about a key's length or its common prefix with the candidate. Every key is compared (no early
    return on a match), so it says nothing about which key matched either.
    """

    def __init__(self, keys: Iterable[str]):
        self._digests = tuple(_digest(key) for key in keys if key)

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"DirectorKeys(<{len(self._digests)} keys>)"

    def check(self, candidate: str | None) -> bool:
        if not candidate or not isinstance(candidate, str) or len(candidate) > MAX_DIRECTOR_KEY_CHARS:
            # Length is the caller's own input, not a secret: refusing early leaks nothing.
            return False
        digest = _digest(candidate)
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(known, digest)
        return matched


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None`` if absent or another scheme."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def generate_secret() -> str:
    """A new ticket signing secret (256 bits, URL-safe text so it fits TOML and environment variables)."""
    return secrets.token_urlsafe(32)


def generate_director_key() -> str:
    """A new director key. The ``dk_`` prefix makes keys recognisable in configuration and secret scanners."""
    return "dk_" + secrets.token_urlsafe(24)
