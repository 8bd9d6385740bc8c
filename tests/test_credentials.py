"""Tickets (signing, verification, rotation, expiry) and director keys."""

from __future__ import annotations

import base64

import msgspec
import pytest

from playtotv import credentials
from playtotv.credentials import DirectorKeys, ExpiredTicket, InvalidTicket, KeyRing, Ticket

SECRET = "s" * 16 + "-current-secret"
OLD_SECRET = "o" * 16 + "-previous-secret"
NOW = 1_764_166_400.0


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.from_secrets(SECRET)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_valid_ticket_round_trip(ring):
    token, ticket = ring.issue("u_1", ttl=3600, now=NOW)
    assert ticket.user_id == "u_1" and ticket.role == "viewer" and ticket.kid == ring.active_kid
    assert ticket.issued_at == NOW and ticket.expires_at == NOW + 3600 and ticket.session_id
    assert ring.verify(token, now=NOW + 10) == ticket
    # Format: two unpadded base64url parts; only URL-safe characters, so it fits a query string.
    payload, signature = token.split(".")
    assert "=" not in token and set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert len(unb64(signature)) == 32
    assert msgspec.msgpack.decode(unb64(payload), type=Ticket) == ticket


def test_each_issue_has_its_own_session(ring):
    first, _ = ring.issue("u_1", ttl=60)
    second, _ = ring.issue("u_1", ttl=60)
    assert ring.verify(first).session_id != ring.verify(second).session_id
    _, given = ring.issue("u_1", ttl=60, session_id="sess-7")
    assert given.session_id == "sess-7"


def test_forged_signature(ring):
    token, _ = ring.issue("u_1", ttl=60, now=NOW)
    payload, signature = token.split(".")
    flipped = bytearray(unb64(signature))
    flipped[0] ^= 1
    with pytest.raises(InvalidTicket):
        ring.verify(f"{payload}.{b64(bytes(flipped))}", now=NOW)


def test_tampered_payload(ring):
    token, ticket = ring.issue("u_1", ttl=60, now=NOW)
    _, signature = token.split(".")
    promoted = msgspec.structs.replace(ticket, user_id="u_admin", expires_at=NOW + 10**6)
    with pytest.raises(InvalidTicket):
        ring.verify(f"{b64(msgspec.msgpack.encode(promoted))}.{signature}", now=NOW)


def test_signed_with_someone_elses_secret_under_our_kid(ring):
    attacker = KeyRing({ring.active_kid: b"attacker-secret-0123456789"}, ring.active_kid)
    token, _ = attacker.issue("u_1", ttl=60, now=NOW)
    with pytest.raises(InvalidTicket, match="signature"):
        ring.verify(token, now=NOW)


def test_wrong_key_ring(ring):
    token, _ = KeyRing.from_secrets("another-secret-entirely!").issue("u_1", ttl=60, now=NOW)
    with pytest.raises(InvalidTicket, match="unknown key"):
        ring.verify(token, now=NOW)


@pytest.mark.parametrize("cut", [1, 5, 20, 44])
def test_truncated(ring, cut):
    token, _ = ring.issue("u_1", ttl=60, now=NOW)
    with pytest.raises(InvalidTicket):
        ring.verify(token[:-cut], now=NOW)
    with pytest.raises(InvalidTicket):
        ring.verify(token[cut:], now=NOW)


@pytest.mark.parametrize(
    "garbage",
    ["", ".", "abc", "abc.", ".abc", "a.b.c", "!!!.???", "a" * 50 + "." + "b" * 43, "é.é",
     b64(b"\xc1") + "." + b64(b"x" * 32),  # invalid msgpack, right-sized signature
     b64(msgspec.msgpack.encode(["k", "u"])) + "." + b64(b"x" * 32),  # wrong shape
     b64(msgspec.msgpack.encode({"kid": "k"})) + "." + b64(b"x" * 32)],
)
def test_garbage(ring, garbage):
    with pytest.raises(InvalidTicket):
        ring.verify(garbage, now=NOW)


def test_non_canonical_base64_is_refused(ring):
    token, _ = ring.issue("u_1", ttl=60, now=NOW)
    payload, signature = token.split(".")
    # The signature's last character carries unused bits: set them, the bytes decode the same.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    twin = signature[:-1] + alphabet[last | 1 if not last & 1 else last & ~1]
    assert unb64(twin) == unb64(signature) and twin != signature
    with pytest.raises(InvalidTicket):
        ring.verify(f"{payload}.{twin}", now=NOW)


def test_not_a_string(ring):
    with pytest.raises(InvalidTicket):
        ring.verify(None, now=NOW)  # type: ignore[arg-type]


def test_oversized_token_rejected_before_decoding(ring, monkeypatch):
    def fail(*args):
        raise AssertionError("decoded an oversized token")

    monkeypatch.setattr(credentials, "_b64decode", fail)
    with pytest.raises(InvalidTicket):
        ring.verify("a" * (credentials.MAX_TOKEN_CHARS + 1), now=NOW)
    with pytest.raises(ValueError):
        ring.issue("u" * 2000, ttl=60)  # we never mint what we would refuse


def test_rotation(ring):
    old_ring = KeyRing.from_secrets(OLD_SECRET)
    old_token, _ = old_ring.issue("u_old", ttl=60, now=NOW)

    rotated = KeyRing.from_secrets(SECRET, previous=[OLD_SECRET])
    assert rotated.active_kid == ring.active_kid != old_ring.active_kid
    assert rotated.kids == {ring.active_kid, old_ring.active_kid}
    assert rotated.verify(old_token, now=NOW).user_id == "u_old"  # old kid still verifies

    new_token, new_ticket = rotated.issue("u_new", ttl=60, now=NOW)
    assert new_ticket.kid == ring.active_kid  # new key signs
    assert ring.verify(new_token, now=NOW).user_id == "u_new"
    with pytest.raises(InvalidTicket):
        old_ring.verify(new_token, now=NOW)

    # Once the old secret is dropped, its tickets stop verifying.
    with pytest.raises(InvalidTicket):
        ring.verify(old_token, now=NOW)


def test_explicit_key_ids():
    keyring = KeyRing({"2024": b"a" * 32, "2025": b"b" * 32}, active_kid="2025")
    token, ticket = keyring.issue("u_1", ttl=60)
    assert ticket.kid == "2025" and keyring.verify(token) == ticket
    with pytest.raises(ValueError):
        KeyRing({"2024": b"a" * 32}, active_kid="2025")


def test_expired_carries_the_decoded_ticket(ring):
    token, ticket = ring.issue("u_1", ttl=60, now=NOW)
    with pytest.raises(ExpiredTicket) as info:
        ring.verify(token, now=NOW + 60)
    assert info.value.ticket == ticket
    assert isinstance(info.value, InvalidTicket)  # a plain 401 for callers that do not care


def test_allow_expired_for_window(ring):
    token, ticket = ring.issue("u_1", ttl=60, now=NOW)
    within = ring.verify(token, now=NOW + 60 + 299, allow_expired_for=300)
    assert within == ticket and within.expired(NOW + 60 + 299)
    with pytest.raises(ExpiredTicket):
        ring.verify(token, now=NOW + 60 + 300, allow_expired_for=300)


def test_expired_forgery_is_invalid_not_expired(ring):
    token, _ = ring.issue("u_1", ttl=60, now=NOW)
    payload, signature = token.split(".")
    forged = f"{payload}.{b64(bytes(32))}"
    with pytest.raises(InvalidTicket) as info:
        ring.verify(forged, now=NOW + 3600, allow_expired_for=10**6)
    assert not isinstance(info.value, ExpiredTicket)  # never hand a forged payload to resume


def test_weak_secrets():
    with pytest.raises(ValueError) as info:
        credentials.check_secret("hunter2")
    assert "hunter2" not in str(info.value)
    credentials.check_secret(credentials.generate_secret())
    with pytest.raises(ValueError):
        KeyRing.from_secrets("")  # a ring refuses only the empty secret; strength is checked in settings


def test_secrets_never_in_reprs_or_errors(ring):
    assert SECRET not in repr(ring) and SECRET not in str(vars(ring).get("active_kid"))
    keys = DirectorKeys(["dk_topsecret"])
    assert "dk_topsecret" not in repr(keys)
    token, _ = ring.issue("u_1", ttl=1, now=NOW)
    with pytest.raises(InvalidTicket) as info:
        ring.verify(token[:-3], now=NOW)
    assert token[:20] not in str(info.value)


def test_ttl_must_be_positive(ring):
    with pytest.raises(ValueError):
        ring.issue("u_1", ttl=0)


# -- director keys -------------------------------------------------------------------------------------------

def test_director_keys():
    first, second = credentials.generate_director_key(), credentials.generate_director_key()
    keys = DirectorKeys([first, second])
    assert len(keys) == 2
    assert keys.check(first) and keys.check(second)
    assert not keys.check(first[:-1])
    assert not keys.check(first + "x")
    assert not keys.check("")
    assert not keys.check(None)
    assert not keys.check("x" * 10_000)
    assert not keys.check(123)  # type: ignore[arg-type]
    assert not DirectorKeys([]).check(first)
    assert not DirectorKeys([""]).check("")  # an empty configured key never opens the door


def test_generated_secrets():
    secret = credentials.generate_secret()
    assert len(secret) >= 43 and secret != credentials.generate_secret()
    credentials.check_secret(secret)  # long enough to be accepted
    key = credentials.generate_director_key()
    assert key.startswith("dk_") and len(key) >= 32


@pytest.mark.parametrize(
    "header, expected",
    [("Bearer abc.def", "abc.def"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None),
     ("Bearer ", None), ("", None), (None, None)],
)
def test_bearer_token(header, expected):
    assert credentials.bearer_token(header) == expected


def test_a_ticket_is_accepted_only_for_its_own_purpose(ring):
    """A gatekeeper queue token proves a place in the queue, never a session; a viewer ticket is never a
    queue token. The check lives in ``verify`` itself, so no endpoint can forget it."""
    queue_token, _ = ring.issue("q_1", ttl=60, role=credentials.QUEUE_ROLE, now=NOW)
    viewer_token, _ = ring.issue("u_1", ttl=60, now=NOW)
    with pytest.raises(credentials.WrongPurpose, match="queue"):
        ring.verify(queue_token, now=NOW)  # the default purpose: a viewer's
    with pytest.raises(credentials.WrongPurpose):
        ring.verify(viewer_token, role=credentials.QUEUE_ROLE, now=NOW)
    assert ring.verify(queue_token, role=credentials.QUEUE_ROLE, now=NOW).user_id == "q_1"
    assert ring.verify(viewer_token, now=NOW).user_id == "u_1"
    # the purpose is checked before the expiry: an expired token of another purpose is still the wrong one
    with pytest.raises(credentials.WrongPurpose):
        ring.verify(queue_token, now=NOW + 3600, allow_expired_for=7200)
