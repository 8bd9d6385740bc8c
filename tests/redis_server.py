"""The tests' Redis is ``playtotv.devtools``' own: a ``redis-server`` of the test's own on a free loopback
port, persistence off, so "restart" means "memory lost" (docs/reliability.md #16). The suite never uses a
Redis that happens to run on the machine."""

from __future__ import annotations

from playtotv.devtools.localredis import RedisServer, free_port

__all__ = ["RedisServer", "free_port"]
