"""The web pages served by core: ``/console`` (directors), ``/play`` (viewers), their static files under
``/static/<name>``, and ``/config.json``, which tells a page where the gatekeeper is.

The pages use only the public contract (docs/api.md), like any other client; core merely hosts the files.
Files are read once at start and kept in memory (a few tens of KiB): a flash crowd opening ``/play``
costs no disk reads. Only names present in ``web/`` at start can be served, so no request path ever
reaches the file system.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from quart import Response, request

from playtotv.broker.base import BrokerUnavailable
from playtotv.http import json_response
from playtotv.protocol.errors import ApiError

if TYPE_CHECKING:
    from playtotv.context import NodeContext
    from playtotv.roles.core import CoreApi

WEB_DIR = Path(__file__).with_name("web")
#: Names a static file may have: no separators, no dot files; anything else is a 404 before any lookup.
STATIC_NAME = re.compile(r"^[A-Za-z0-9_-]+\.(?:js|css|html|png|svg|ico)$")
CONTENT_TYPES = {
    # Module scripts are refused by browsers unless served with a JavaScript MIME type.
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}
#: The pages load scripts and styles from here only; they talk to the gatekeeper, core and push on other
#: ports (and hosts, in a cluster), hence the open connect-src. Every file core serves carries it, not
#: only /console and /play: the same pages are reachable as /static/console.html and /static/play.html,
#: and no other site may frame any of them (frame-ancestors; X-Frame-Options for older browsers).
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self' http: https: ws: wss:; frame-ancestors 'none'; base-uri 'none'")
#: The gatekeeper list in /config.json is re-read from the registry at most this often: a page load
#: must not be a registry read when a whole audience opens /play at once.
CONFIG_TTL = 2.0
#: A registry read slower than this is treated as unavailable (the page retries).
REGISTRY_TIMEOUT = 2.0
CONFIG_RETRY_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def load_files(directory: Path = WEB_DIR) -> dict[str, StaticFile]:
    files: dict[str, StaticFile] = {}
    if not directory.is_dir():
        return files  # an install without package data: the pages answer 404, the API is unaffected
    for path in sorted(directory.iterdir()):
        if path.is_file() and STATIC_NAME.match(path.name):
            body = path.read_bytes()
            files[path.name] = StaticFile(body, CONTENT_TYPES[path.suffix],
                                          '"' + hashlib.blake2b(body, digest_size=8).hexdigest() + '"')
    return files


#: Headers of every file core serves.
FILE_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": PAGE_CSP, "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


def _serve(file: StaticFile) -> Response:
    # no-cache = revalidate every time (cheap with the ETag): a new release is picked up on reload,
    # never half old, half new modules.
    headers = {"ETag": file.etag, **FILE_HEADERS}
    if request.headers.get("If-None-Match") == file.etag:
        return Response(b"", status=304, headers=headers)
    return Response(file.body, content_type=file.content_type, headers=headers)


class GatekeeperDirectory:
    """The gatekeeper URLs a page should try, from the registry, this node's own first (when it runs
    one: the page came from this host, so this host is reachable)."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self._urls: list[str] = []
        self._read_at = float("-inf")

    async def urls(self) -> list[str]:
        now = time.monotonic()
        if now - self._read_at >= CONFIG_TTL or not self._urls:
            with trio.move_on_after(REGISTRY_TIMEOUT):
                try:
                    nodes = await self.ctx.registry.nodes()
                except BrokerUnavailable:
                    return self._urls  # the last good list is still the best guess
                urls = [n.endpoints["gatekeeper"] for n in nodes if "gatekeeper" in n.endpoints]
                own = self.ctx.endpoints.get("gatekeeper")
                self._urls = sorted(set(urls), key=lambda url: (url != own, url))
                self._read_at = now
        return self._urls


def register(api: CoreApi) -> None:
    """Add the page routes to core's app (one call from ``roles/core/__init__.py``)."""
    app, ctx = api.app, api.ctx
    files = load_files()
    gatekeepers = GatekeeperDirectory(ctx)

    def file_or_404(name: str) -> StaticFile:
        file = files.get(name) if STATIC_NAME.match(name) else None
        if file is None:
            raise ApiError("not_found", "no such file")
        return file

    async def console() -> Response:
        return _serve(file_or_404("console.html"))

    async def play() -> Response:
        return _serve(file_or_404("play.html"))

    async def static_file(name: str) -> Response:
        return _serve(file_or_404(name))

    async def config() -> Response:
        urls = await gatekeepers.urls()
        if not urls:
            raise ApiError("unavailable", "no gatekeeper is registered yet", retry_after=CONFIG_RETRY_AFTER)
        return json_response({"gatekeepers": urls, "core": ctx.endpoints.get("core")},
                             headers={"Cache-Control": "no-store"})

    app.add_url_rule("/console", "web_console", console, methods=["GET"])
    app.add_url_rule("/play", "web_play", play, methods=["GET"])
    app.add_url_rule("/static/<name>", "web_static", static_file, methods=["GET"])
    app.add_url_rule("/config.json", "web_config", config, methods=["GET"])
