"""Every Redis key and channel name, built in one place (like arq's constants.py).

Nothing a client sends is used as a key without validation: ids are checked against ``ID_PATTERN``
before they reach these functions (see ``validate_id``).
"""

from __future__ import annotations

import re

#: Prefix of every key this platform writes, so one Redis can be shared and inspected easily.
PREFIX = "ptv:"

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def validate_id(value: str) -> str:
    if not ID_PATTERN.match(value):
        raise ValueError(f"invalid id {value!r}")
    return value


# -- broker internals (channels) ----------------------------------------------------------------------
def channel_pubsub(channel: str) -> str:
    return f"{PREFIX}ch:{channel}"


def channel_history(channel: str) -> str:
    return f"{PREFIX}hist:{channel}"


def channel_offset(channel: str) -> str:
    return f"{PREFIX}off:{channel}"


def channel_epoch(channel: str) -> str:
    return f"{PREFIX}epoch:{channel}"


# -- broker internals (queues, leases) -----------------------------------------------------------------
def queue_stream(queue: str) -> str:
    return f"{PREFIX}q:{queue}"


def queue_dead(queue: str) -> str:
    return f"{PREFIX}qdead:{queue}"


def queue_dedupe(queue: str, key: str) -> str:
    return f"{PREFIX}qdd:{queue}:{key}"


QUEUE_GROUP = "workers"


def lease(name: str) -> str:
    return f"{PREFIX}lease:{name}"


def lease_token(name: str) -> str:
    return f"{PREFIX}leasetok:{name}"


def user_key(key: str) -> str:
    """Counters, hashes and sorted sets that callers name (stats, leaderboards) live under one prefix."""
    return f"{PREFIX}k:{key}"


# -- registry -------------------------------------------------------------------------------------------
REGISTRY_INDEX = f"{PREFIX}nodes"


def registry_node(node_id: str) -> str:
    return f"{PREFIX}node:{node_id}"


# -- channel names (what clients subscribe to) ------------------------------------------------------------
def episode_channel(episode_id: str) -> str:
    return f"episode:{episode_id}"


def user_channel(user_id: str) -> str:
    return f"user:{user_id}"
