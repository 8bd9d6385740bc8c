"""Run a real node in the test's own trio loop: ``ctx = await start_node(nursery, roles, **settings)``.

It is the same ``run_node`` the CLI uses (listeners, registration, drain), with signals left to pytest.
Settings are given like environment variables without the prefix: ``core_bind="127.0.0.1:0"``.

A test that needs backends no deployment would open (a memory broker, a broker option such as a
visibility timeout of a fraction of a second) builds the context with ``node_context`` and starts the
roles with ``start_roles``, as ``run_node`` does (``tests/playkit.py``, ``tests/pushkit.py``).
"""

from __future__ import annotations

from typing import Any, Iterable

import trio

from playtotv.credentials import DirectorKeys, KeyRing
from playtotv.metrics import Metrics
from playtotv.context import NodeContext
from playtotv.node import START_ORDER, _role_runner, run_node
from playtotv.settings import Settings, load_settings

#: Everything on free ports and in memory unless a test says otherwise.
DEFAULTS = {
    "gatekeeper_bind": "127.0.0.1:0",
    "core_bind": "127.0.0.1:0",
    "push_bind": "127.0.0.1:0",
    "push_polling_bind": "127.0.0.1:0",
    "store_url": "sqlite:///:memory:",
    "node_drain_seconds": "2",
    "auth_secret": "test-secret-0123456789",
    "auth_director_keys": "director-key-0123456789",
}


def make_settings(**overrides: str) -> Settings:
    env = {f"PLAYTOTV_{k.upper()}": str(v) for k, v in {**DEFAULTS, **overrides}.items()}
    return load_settings(None, environ=env)


class RunningNode:
    def __init__(self, ctx: NodeContext, drain: trio.Event, listening: dict[str, str]) -> None:
        self.ctx = ctx
        self.drain = drain
        self.listening = listening

    def url(self, role: str) -> str:
        return self.listening[role]


def node_context(settings: Settings, roles: Iterable[str], *, broker: Any, registry: Any, store: Any, secret: str,
                 director_keys: Iterable[str] = (), node_id: str = "test") -> NodeContext:
    """The context ``run_node`` would build, around the test's own backends; listeners are not announced."""
    ctx = NodeContext(
        settings=settings, node_id=node_id, roles=list(roles), broker=broker, registry=registry, store=store,
        tickets=KeyRing.from_secrets(secret), director_keys=DirectorKeys(list(director_keys)), metrics=Metrics(),
    )
    return ctx


async def start_roles(nursery: trio.Nursery, ctx: NodeContext) -> None:
    """Start ``ctx.roles`` in ``nursery`` in the node's order, each as ``run_node`` starts it."""
    for role in sorted(ctx.roles, key=START_ORDER.index):
        await nursery.start(_role_runner(role), ctx)


async def start_node(nursery: trio.Nursery, roles: list[str], **overrides: str) -> RunningNode:
    drain = trio.Event()
    listening: dict[str, str] = {}
    ctx = await nursery.start(
        lambda task_status: run_node(
            make_settings(**overrides), roles, handle_signals=False, drain=drain,
            on_listening=lambda role, url: listening.__setitem__(role, url), task_status=task_status,
        )
    )
    return RunningNode(ctx, drain, listening)
