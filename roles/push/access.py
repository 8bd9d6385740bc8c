"""Which channels a client may follow (api.md "Push"): any ``episode:*`` and its own ``user:<id>``.

The channel name itself is validated by the protocol decoder (``protocol.push.Channel``) before it gets
here; this module only decides ownership, so both transports apply one rule.
"""

from __future__ import annotations

from playtotv.keys import ID_PATTERN, episode_channel, user_channel

_EPISODE_PREFIX = episode_channel("")


def may_follow(user_id: str, channel: str) -> bool:
    if channel == user_channel(user_id):
        return True
    if channel.startswith(_EPISODE_PREFIX):
        return ID_PATTERN.match(channel[len(_EPISODE_PREFIX):]) is not None
    return False
