"""Rules both broker implementations apply the same way, kept in one place so they cannot drift apart.

The Redis implementation repeats some of them in Lua (``lua/*.lua``); each such spot names the
function here that it mirrors.
"""

from __future__ import annotations

import secrets
import time

#: Dead letters kept per queue. They are for inspection and manual replay, not storage: a poison item
#: that is enqueued again and again must not grow memory without bound.
DEAD_LETTER_CAP = 10_000

#: Messages a subscription buffers for a subscriber that is slower than its publishers. Past it the
#: subscriber gets a SubscriptionReset (see ``_inbox``) instead of stalling publishers or every other
#: subscriber. A push node drains its subscription into per-client buffers without awaiting clients, so
#: only a stuck push node reaches this.
DEFAULT_SUBSCRIBER_BUFFER = 4096


def new_epoch() -> str:
    """A fresh channel epoch: random, so a recreated history never reuses an epoch a client remembers."""
    return secrets.token_hex(8)


def check_history_args(since: int, limit: int) -> None:
    """A negative position or a limit below one is a caller bug (positions from clients are validated
    before they get here), not a gap to report."""
    if since < 0:
        raise ValueError(f"since must be >= 0, got {since}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")


def history_complete(since: int, offset: int, first_offset: int | None) -> bool:
    """Whether a history answer starts right after ``since`` with nothing missing.

    ``offset`` is the channel's last offset, ``first_offset`` that of the first message returned (None
    when none was). Offsets are gap-free inside an epoch, so the first message decides.
    """
    if since > offset:
        return False  # ahead of the channel: a position from another epoch, or a forged one
    if since == offset:
        return True  # up to date: nothing is missing
    return first_offset == since + 1  # anything else was trimmed away


def next_fencing_token(last_token: int) -> int:
    """The token of a lease that changes hands.

    Strictly greater than ``last_token``; also at least the wall clock in milliseconds, so tokens keep
    growing when the broker loses its counters (a Redis restart, a restarted embedded node) while a
    store still remembers the last token it accepted. Mirrored in Lua by ``lua/acquire_lease.lua``.
    """
    return max(last_token + 1, int(time.time() * 1000))


def check_ttl(ttl: float) -> float:
    """TTLs must be positive (Redis rejects zero and negative expiry times; so does the memory broker)."""
    if not ttl > 0:
        raise ValueError(f"a TTL must be > 0 seconds, got {ttl}")
    return ttl
