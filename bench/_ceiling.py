"""The ceiling of ``bench answers``: a trivial answer endpoint on the same stack as core.

Same Hypercorn configuration, same QuartTrio app factory (ops routes, metrics hooks, error handlers),
same path shape and body: it reads the body and answers 202 with ``received_at``, and does nothing else
(no ticket check, no validation, no Redis). ``bench admission`` uses ``POST /v1/session`` the same way:
the gatekeeper's path, read the body, answer 200 with a small JSON object. ``python -m bench._ceiling`` prints
``ceiling listening on <url>`` and ``ready``, and serves until SIGTERM.
"""

from __future__ import annotations

import signal
import time

import trio
from quart import Response, request

from playtotv.credentials import DirectorKeys, KeyRing
from playtotv.broker.memory import MemoryBroker
from playtotv.cli import READY_LINE, listening_line
from playtotv.http import create_app, json_response, serve_http
from playtotv.metrics import Metrics
from playtotv.context import NodeContext
from playtotv.registry import open_registry
from playtotv.settings import load_settings
from playtotv.store import open_store

from bench._play import SECRET


async def main() -> None:
    settings = load_settings(None, environ={})
    async with open_registry(None) as registry, open_store("sqlite:///:memory:") as store:
        ctx = NodeContext(settings=settings, node_id="ceiling", roles=[], broker=MemoryBroker(), registry=registry,
                          store=store, tickets=KeyRing.from_secrets(SECRET), director_keys=DirectorKeys([]),
                          metrics=Metrics())
        ctx.on_listening = lambda role, url: print(listening_line(role, url), flush=True)
        app = create_app(ctx, "ceiling", max_body=settings.core.max_body_bytes)

        async def answer(interaction_id: str) -> Response:
            await request.get_data()
            return json_response({"accepted": True, "received_at": time.time()}, 202)

        async def session() -> Response:
            await request.get_data()
            return json_response({"server_time": time.time()})

        app.add_url_rule("/v1/interactions/<interaction_id>/answers", "answer", answer, methods=["POST"])
        app.add_url_rule("/v1/session", "session", session, methods=["POST"])
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_http, ctx, app, "127.0.0.1:0", "ceiling")
            print(READY_LINE, flush=True)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    ctx.draining.set()
                    break


if __name__ == "__main__":
    trio.run(main)
