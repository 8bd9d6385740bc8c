"""The published REST contract (``protocol/contract.py`` ROUTES, printed by ``playtotv schema openapi``) is
what the servers do: every route a role registers is documented and every documented route is served,
and a call of each documented route answers the documented status with a body valid against the
documented schema.

One node runs every HTTP role in the test's own trio loop; ``create_app`` is wrapped to see each role's
Quart app, so the route lists come from the servers themselves, not from a copy.
"""

from __future__ import annotations

import importlib
import re
import sys
from typing import Any

import httpx
import jsonschema
import pytest
import trio
from trio_websocket import open_websocket_url

import playtotv.http
from playtotv.protocol import contract
from tests.inprocess import DEFAULTS, start_node

pytestmark = pytest.mark.slow  # a real node with its listeners

DIRECTOR = {"Authorization": f"Bearer {DEFAULTS['auth_director_keys']}"}
HTTP_ROLES = ("gatekeeper", "core", "push")
#: Pages core hosts for people (the console and the viewer app, their files, where the gatekeepers are):
#: not part of the REST API, so not in the OpenAPI document.
PAGES = {("core", "get", "/console"), ("core", "get", "/play"), ("core", "get", "/static/{}"),
         ("core", "get", "/config.json")}
#: Served beneath Quart by the push role's own WebSocket server; the call test below opens one.
WEBSOCKET = ("push", "get", "/v1/ws")


def _shape(path: str) -> str:
    """``/v1/interactions/<interaction_id>`` and ``/v1/interactions/{id}`` alike: ``/v1/interactions/{}``."""
    return re.sub(r"<(?:\w+:)?\w+>|\{\w+\}", "{}", path)


def documented() -> set[tuple[str, str, str]]:
    """(role, method, path shape) of every route in the OpenAPI document."""
    routes = set()
    for path, item in contract.openapi_document()["paths"].items():
        for method, operation in item.items():
            roles = HTTP_ROLES if operation["tags"] == ["every role"] else operation["tags"]
            routes |= {(role, method, _shape(path)) for role in roles}
    return routes


@pytest.fixture
def apps(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Each role's Quart app, as the role builds it (wherever the role imported ``create_app`` from)."""
    built: dict[str, Any] = {}
    original = playtotv.http.create_app

    def recording(ctx: Any, role: str, **kwargs: Any) -> Any:
        built[role] = original(ctx, role, **kwargs)
        return built[role]

    for role in HTTP_ROLES:
        importlib.import_module(f"playtotv.roles.{role}")
    for name, module in list(sys.modules.items()):
        if name.startswith("playtotv.") and getattr(module, "create_app", None) is original:
            monkeypatch.setattr(module, "create_app", recording)
    return built


def served(apps: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(role, method.lower(), _shape(rule.rule))
            for role, app in apps.items() for rule in app.url_map.iter_rules()
            for method in rule.methods - {"HEAD", "OPTIONS"}}


async def test_every_served_route_is_documented_and_every_documented_one_served(nursery, apps):
    await start_node(nursery, list(HTTP_ROLES))
    assert set(apps) == set(HTTP_ROLES)
    assert served(apps) - PAGES == documented() - {WEBSOCKET}
    assert PAGES <= served(apps)  # the exceptions are real routes, not stale names


class Contract:
    """Checks responses against the OpenAPI document and remembers which operations were seen."""

    def __init__(self) -> None:
        self.document = contract.openapi_document()
        self.seen: set[tuple[str, str]] = set()

    def check(self, method: str, path: str, response: httpx.Response, status: int | None = None) -> Any:
        operation = self.document["paths"][path][method]
        declared = operation["responses"].get(str(response.status_code))
        assert declared is not None, f"{method} {path}: {response.status_code} is not documented: {response.text}"
        assert 200 <= response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
        if status is not None:
            assert response.status_code == status, f"{method} {path}: {response.status_code}"
        content = declared.get("content", {})
        if "application/json" in content:
            body = response.json()
            schema_ = {**content["application/json"]["schema"], "components": self.document["components"]}
            jsonschema.Draft202012Validator(schema_).validate(body)
        elif "text/plain" in content:
            assert response.headers["content-type"].startswith("text/plain")
        else:
            assert response.content == b"", f"{method} {path}: documented without a body"
        self.seen.add((method, path))
        return response.json() if "application/json" in content else None


async def test_every_documented_route_answers_as_documented(nursery):
    node = await start_node(nursery, list(HTTP_ROLES))
    gatekeeper, core = node.url("gatekeeper"), node.url("core")
    contract = Contract()
    async with httpx.AsyncClient(timeout=10) as http:
        async def call(method: str, path: str, base: str, *, status: int | None = None, headers=None,
                       json: Any = None, params=None, **values: str) -> Any:
            url = base + path.format(**values)
            response = await http.request(method.upper(), url, headers=headers, json=json, params=params)
            return contract.check(method, path, response, status)

        # gatekeeper
        ann = await call("post", "/v1/session", gatekeeper, json={"name": "Ann"})
        bob = await call("post", "/v1/session", gatekeeper, json={"name": "Bob"})
        await call("get", "/v1/status", gatekeeper)
        viewer = {"Authorization": f"Bearer {ann['ticket']}"}
        other = {"Authorization": f"Bearer {bob['ticket']}"}

        # core: director
        show = await call("post", "/v1/shows", core, headers=DIRECTOR, json={"title": "Show"})
        episode = await call("post", "/v1/shows/{show_id}/episodes", core, headers=DIRECTOR,
                             json={"title": "Tonight"}, show_id=show["id"])
        series = await call("post", "/v1/shows/{show_id}/series", core, headers=DIRECTOR,
                            json={"title": "Weekly", "time": "20:00", "episodes": 1}, show_id=show["id"])
        await call("get", "/v1/series/{series_id}", core, headers=DIRECTOR, series_id=series["id"])
        ep = {"episode_id": episode["id"]}
        interaction = await call("post", "/v1/episodes/{episode_id}/interactions", core, headers=DIRECTOR, json={
            "kind": "quiz", "prompt": "Who?", "correct": "a",
            "options": [{"id": "a", "label": "Ann"}, {"id": "b", "label": "Bob"}]}, **ep)
        it = {"id": interaction["id"]}
        await call("post", "/v1/episodes/{episode_id}/start", core, headers=DIRECTOR, **ep)
        await call("post", "/v1/interactions/{id}/open", core, headers=DIRECTOR, **it)
        await call("post", "/v1/episodes/{episode_id}/events", core, headers=DIRECTOR,
                   json={"type": "applause"}, **ep)
        await call("get", "/v1/episodes/{episode_id}/stats", core, headers=DIRECTOR, **ep)

        # core: viewer
        await call("get", "/v1/kinds", core)
        await call("get", "/v1/me", core, headers=other)  # Bob exists from here on
        await call("put", "/v1/me", core, headers=viewer, json={"name": "Ann B."})
        await call("get", "/v1/episodes/{episode_id}", core, headers=viewer, **ep)
        await call("get", "/v1/interactions/{id}", core, headers=viewer, **it)
        await call("post", "/v1/interactions/{id}/answers", core, headers=viewer, json={"choice": "a"}, **it)
        await call("get", "/v1/interactions/{id}/results", core, headers=viewer, **it)
        await call("get", "/v1/interactions/{id}/friends", core, headers=viewer, **it)
        await call("post", "/v1/me/friends", core, status=201, headers=viewer, json={"user_id": bob["user_id"]})
        # Following again is no error: the same friend, 200.
        await call("post", "/v1/me/friends", core, status=200, headers=viewer, json={"user_id": bob["user_id"]})
        await call("get", "/v1/me/friends", core, headers=viewer)
        remaining = await call("delete", "/v1/me/friends/{user_id}", core, headers=viewer, user_id=bob["user_id"])
        assert remaining == {"friends": []}
        await call("get", "/v1/me/notifications", core, headers=viewer)
        await call("post", "/v1/interactions/{id}/close", core, headers=DIRECTOR, **it)
        await call("post", "/v1/interactions/{id}/reveal", core, headers=DIRECTOR, **it)
        await call("get", "/v1/episodes/{episode_id}/leaderboard", core, headers=viewer, params={"limit": 5}, **ep)

        # push
        poll = node.ctx.endpoints["push_poll"]
        await call("get", "/v1/poll", poll.removesuffix("/v1/poll"), params={
            "ticket": ann["ticket"], "channel": f"episode:{episode['id']}", "timeout": 0})
        with trio.fail_after(10):
            async with open_websocket_url(f"{node.ctx.endpoints['push_ws']}?ticket={ann['ticket']}"):
                contract.seen.add(("get", "/v1/ws"))  # the upgrade (101) succeeded

        await call("post", "/v1/episodes/{episode_id}/end", core, headers=DIRECTOR, **ep)
        # every role
        for role in HTTP_ROLES:
            base = poll.removesuffix("/v1/poll") if role == "push" else node.url(role)
            for path in ("/healthz", "/readyz", "/metrics"):
                await call("get", path, base)

    every = {(method, path) for path, item in contract.document["paths"].items() for method in item}
    assert contract.seen == every  # a route added to the document is called here too


#: Credentials that are wrong for some routes: none, a forged ticket, a director key, a viewer ticket.
CALLERS = ("nobody", "forged", "director", "viewer")


async def test_refusals_are_documented_errors(nursery):
    """Every refusal of a REST route, for each kind of caller and unknown ids, is a status the document
    lists for that route, with the error body."""
    # Forged tickets from one address are throttled (429, documented) after a few: raise the bound so
    # the sweep meets every other refusal too.
    node = await start_node(nursery, list(HTTP_ROLES), core_failed_auth_burst="1000")
    document = contract.openapi_document()
    error_body = {"$ref": "#/components/schemas/ErrorBody", "components": document["components"]}
    bases = {"gatekeeper": node.url("gatekeeper"), "core": node.url("core"),
             "push": node.ctx.endpoints["push_poll"].removesuffix("/v1/poll")}
    async with httpx.AsyncClient(timeout=10) as http:
        ticket = (await http.post(f"{bases['gatekeeper']}/v1/session", json={})).json()["ticket"]
        headers = {"nobody": {}, "forged": {"Authorization": "Bearer not-a-ticket"}, "director": DIRECTOR,
                   "viewer": {"Authorization": f"Bearer {ticket}"}}
        refused = 0
        for route in contract.ROUTES:
            if route.tag not in bases or route.path == "/v1/ws":
                continue
            url = bases[route.tag] + re.sub(r"\{\w+\}", "x_unknown", route.path)
            for caller in CALLERS:
                response = await http.request(route.method.upper(), url, headers=headers[caller], json={})
                if response.status_code < 400:
                    continue
                refused += 1
                listed = document["paths"][route.path][route.method]["responses"]
                assert str(response.status_code) in listed, \
                    f"{route.method} {route.path} as {caller}: {response.status_code} {response.text}"
                jsonschema.Draft202012Validator(error_body).validate(response.json())
        assert refused > 50  # the sweep did meet refusals
        # A method a path does not have: 405 with the error body, and Allow naming the documented ones.
        wrong = await http.patch(f"{bases['core']}/v1/me", headers=headers["viewer"])
        assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "bad_request"
        allowed = {m.strip().lower() for m in wrong.headers["allow"].split(",")} - {"head", "options"}
        assert allowed == set(document["paths"]["/v1/me"])
