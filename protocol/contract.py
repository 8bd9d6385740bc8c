"""Machine-readable contracts generated from the Structs (docs/architecture.md §6), so client makers need not read
our code: :func:`push_json_schema` (JSON Schema 2020-12 of the push frames and message data) and
:func:`openapi_document` (OpenAPI 3.1 of every REST path of docs/api.md). Pure functions, no I/O; the CLI
prints them (``playtotv schema``).

The REST routes are listed once, in :data:`ROUTES`; the document is derived from that table, and the
tests check the table against docs/api.md.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import msgspec

from . import kinds, push, rest
from .errors import STATUS, ErrorBody, ErrorCode

API_VERSION = "1"
_JSON = "application/json"


# -- push ----------------------------------------------------------------------------------------------------

def _push_components(ref_template: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Schemas of the push unions plus their components, with ``message.data`` typed as MessageData.

    ``Message.data`` is ``msgspec.Raw`` in Python (the server splices pre-encoded bytes), which msgspec
    renders as "any value"; on the wire it is always one of the message data types, so say so.
    """
    names = ("ClientFrame", "ServerFrame", "MessageData", "PollResponse")
    types = (push.ClientFrame, push.ServerFrame, push.MessageData, push.PollResponse)
    schemas, components = msgspec.json.schema_components(types, ref_template=ref_template)
    for name, schema in zip(names, schemas, strict=True):
        components.setdefault(name, schema)
    components["Message"]["properties"]["data"] = {"$ref": ref_template.format(name="MessageData")}
    return {name: {"$ref": ref_template.format(name=name)} for name in names}, components


def push_json_schema() -> dict[str, Any]:
    """JSON Schema of the push protocol: any frame on the WebSocket validates against the root schema;
    ``$defs`` holds ``ClientFrame``, ``ServerFrame``, ``MessageData`` (a message's ``data``) and
    ``PollResponse`` (the long-poll body)."""
    refs, components = _push_components("#/$defs/{name}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"PlayToTV push protocol v{API_VERSION}",
        "description": (
            "Frames are JSON text on GET /v1/ws?ticket=<ticket>. Clients send ClientFrame, servers send "
            "ServerFrame; a message frame's data is a MessageData, tagged by its own 'type'. Unknown fields "
            "must be ignored and unknown types skipped: both are added over time."
        ),
        "anyOf": [refs["ClientFrame"], refs["ServerFrame"]],
        "$defs": components,
    }


# -- REST ----------------------------------------------------------------------------------------------------

# Who may call a route; each maps to OpenAPI security requirements below.
PUBLIC = "public"
VIEWER = "viewer"
VIEWER_ONLY = "viewer_only"
DIRECTOR = "director"
TICKET_QUERY = "ticket_query"

_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    PUBLIC: [],
    VIEWER: [{"ticket": []}, {"directorKey": []}],  # a director key may call viewer read endpoints
    VIEWER_ONLY: [{"ticket": []}],  # acting as a user needs a user: a ticket
    DIRECTOR: [{"directorKey": []}],
    TICKET_QUERY: [{"ticketQuery": []}],  # ?ticket=: browsers cannot set headers on a WebSocket
}


class Route(NamedTuple):
    method: str
    path: str
    tag: str  # the role that serves it
    operation_id: str
    summary: str
    access: str
    request: type | None
    status: int
    response: type | None
    errors: tuple[int, ...]
    query: tuple[dict[str, Any], ...] = ()
    #: Other success statuses with the same body, each with what it means.
    also: tuple[tuple[int, str], ...] = ()


_AUTH_ERRORS = (400, 401, 403)


def _query(name: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, **extra}


_Q_SCOPE = _query("scope", {"enum": ["global", "friends"], "default": "global"})
_Q_LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10})
_Q_SINCE = _query("since", {"type": "string"}, description="cursor from a previous response")
_Q_CHANNEL = _query(
    "channel",
    {"type": "array", "items": {"type": "string", "pattern": push.CHANNEL_REGEX}},
    required=True,
    explode=True,
    description="repeat to poll several channels at once",
)
_Q_EPOCH = _query("epoch", {"type": "string"})
_Q_OFFSET = _query("offset", {"type": "integer", "minimum": 0})
_Q_TIMEOUT = _query("timeout", {"type": "number", "minimum": 0, "maximum": 60, "default": 25})

ROUTES: tuple[Route, ...] = (
    # gatekeeper
    Route("post", "/v1/session", "gatekeeper", "createSession", "Join: a signed ticket and endpoint lists",
          PUBLIC, rest.SessionRequest, 200, rest.SessionResponse, (400, 429, 503)),
    Route("get", "/v1/status", "gatekeeper", "getStatus", "Admission figures and live node counts",
          PUBLIC, None, 200, rest.GatekeeperStatus, ()),
    # core: director
    Route("post", "/v1/shows", "core", "createShow", "Create a show",
          DIRECTOR, rest.CreateShow, 201, rest.Show, _AUTH_ERRORS),
    Route("post", "/v1/shows/{show_id}/episodes", "core", "createEpisode", "Create an episode",
          DIRECTOR, rest.CreateEpisode, 201, rest.EpisodeView, (*_AUTH_ERRORS, 404)),
    Route("post", "/v1/shows/{show_id}/series", "core", "createSeries",
          "Create a recurring series: episodes from a template, ahead of air time",
          DIRECTOR, rest.CreateSeries, 201, rest.Series, (*_AUTH_ERRORS, 404)),
    Route("get", "/v1/series/{series_id}", "core", "getSeries", "A recurring series and its episodes so far",
          DIRECTOR, None, 200, rest.Series, (*_AUTH_ERRORS, 404)),
    Route("post", "/v1/episodes/{episode_id}/interactions", "core", "createInteraction",
          "Create an interaction (status draft)",
          DIRECTOR, rest.InteractionBody, 201, rest.InteractionView, (*_AUTH_ERRORS, 404, 409)),
    Route("post", "/v1/interactions/{id}/open", "core", "openInteraction", "Open (no-op if already open)",
          DIRECTOR, rest.OpenInteraction, 200, rest.InteractionView, (*_AUTH_ERRORS, 404, 409)),
    Route("post", "/v1/interactions/{id}/close", "core", "closeInteraction", "Close (no-op if already closed)",
          DIRECTOR, rest.CloseInteraction, 200, rest.InteractionView, (*_AUTH_ERRORS, 404, 409)),
    Route("post", "/v1/interactions/{id}/reveal", "core", "revealInteraction",
          "Reveal the answer and award scores", DIRECTOR, rest.RevealInteraction, 200, rest.InteractionView,
          (*_AUTH_ERRORS, 404, 409, 422)),
    Route("post", "/v1/episodes/{episode_id}/start", "core", "startEpisode",
          "Go live (prerecorded: the timeline runs from `at`)",
          DIRECTOR, rest.StartEpisode, 200, rest.EpisodeView, (*_AUTH_ERRORS, 404, 409)),
    Route("post", "/v1/episodes/{episode_id}/end", "core", "endEpisode", "End the episode",
          DIRECTOR, rest.EndEpisode, 200, rest.EpisodeView, (*_AUTH_ERRORS, 404, 409)),
    Route("post", "/v1/episodes/{episode_id}/events", "core", "postDirectorEvent",
          "Push a director.event to the episode channel",
          DIRECTOR, rest.DirectorEvent, 202, rest.Accepted, (*_AUTH_ERRORS, 404)),
    Route("get", "/v1/episodes/{episode_id}/stats", "core", "getEpisodeStats", "Live figures",
          DIRECTOR, None, 200, rest.EpisodeStats, (*_AUTH_ERRORS, 404)),
    # core: viewer
    Route("get", "/v1/episodes/{episode_id}", "core", "getEpisode", "Episode state and current interaction",
          VIEWER, None, 200, rest.EpisodeView, (401, 404, 429)),
    Route("get", "/v1/interactions/{id}", "core", "getInteraction", "An interaction (no `correct` until revealed)",
          VIEWER, None, 200, rest.InteractionView, (401, 404, 429)),
    Route("post", "/v1/interactions/{id}/answers", "core", "answer",
          "Answer; retrying the same request never creates a second answer",
          VIEWER_ONLY, rest.AnswerRequest, 202, rest.AnswerAccepted, (*_AUTH_ERRORS, 404, 409, 422, 429)),
    Route("get", "/v1/interactions/{id}/results", "core", "getResults", "Counts and percentages",
          VIEWER, None, 200, rest.Results, (401, 404, 429)),
    Route("get", "/v1/interactions/{id}/friends", "core", "getFriendsChoices",
          "What the caller's friends answered (quiz and prediction: only once the caller answered or it "
          "closed; until then `hidden`)", VIEWER_ONLY, None, 200, rest.FriendsChoices, (401, 404, 429)),
    Route("get", "/v1/episodes/{episode_id}/leaderboard", "core", "getLeaderboard", "Top scores and the caller's",
          VIEWER, None, 200, rest.Leaderboard, (400, 401, 404, 429), (_Q_SCOPE, _Q_LIMIT)),
    Route("get", "/v1/me", "core", "getProfile", "The caller's profile",
          VIEWER_ONLY, None, 200, rest.Profile, (401, 429)),
    Route("put", "/v1/me", "core", "updateProfile", "Change the caller's name",
          VIEWER_ONLY, rest.UpdateProfile, 200, rest.Profile, (400, 401, 429)),
    Route("post", "/v1/me/friends", "core", "addFriend", "Follow a user",
          VIEWER_ONLY, rest.AddFriend, 201, rest.Friend, (400, 401, 404, 429),
          also=((200, "Already followed: the existing friend entry"),)),
    Route("get", "/v1/me/friends", "core", "listFriends", "Users the caller follows",
          VIEWER_ONLY, None, 200, rest.FriendList, (401, 429)),
    Route("delete", "/v1/me/friends/{user_id}", "core", "removeFriend",
          "Unfollow a user; answers the users the caller still follows",
          VIEWER_ONLY, None, 200, rest.FriendList, (401, 404, 429)),
    Route("get", "/v1/me/notifications", "core", "listNotifications", "Notifications newer than `since`",
          VIEWER_ONLY, None, 200, rest.NotificationList, (400, 401, 429), (_Q_SINCE,)),
    Route("get", "/v1/kinds", "core", "listKinds",
          "The interaction kinds this server accepts and how each behaves",
          PUBLIC, None, 200, kinds.KindList, ()),
    # push
    Route("get", "/v1/ws", "push", "websocket",
          "WebSocket upgrade; frames are described by the push JSON Schema (x-frames)",
          TICKET_QUERY, None, 101, None, (400, 401, 503)),
    Route("get", "/v1/poll", "push", "poll", "Long-polling fallback",
          TICKET_QUERY, None, 200, push.PollResponse, (400, 401, 403, 404, 429, 503),
          (_Q_CHANNEL, _Q_EPOCH, _Q_OFFSET, _Q_TIMEOUT)),
    # every role
    Route("get", "/healthz", "every role", "healthz", "The process is alive",
          PUBLIC, None, 200, rest.Health, ()),
    Route("get", "/readyz", "every role", "readyz", "Dependencies reachable and node registered",
          PUBLIC, None, 200, rest.Readiness, (503,)),
    Route("get", "/metrics", "every role", "metrics", "Prometheus text format",
          PUBLIC, None, 200, None, ()),
)

# Named responses per error status; the description lists the codes docs/api.md gives each status.
_ERROR_RESPONSE_NAMES = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
    422: "InvalidChoice", 429: "RateLimited", 503: "Unavailable",
}
_RETRYABLE = frozenset({429, 503})

_PATH_PARAM = re.compile(r"\{(\w+)\}")
_STATUS_TEXT = {101: "Switching Protocols", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content"}


def _ref(model: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _error_responses() -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, name in _ERROR_RESPONSE_NAMES.items():
        codes = ", ".join(f"`{code.value}`" for code, s in STATUS.items() if s == status)
        response: dict[str, Any] = {
            "description": f"Error; `error.code` is one of {codes}",
            "content": {_JSON: {"schema": _ref(ErrorBody)}},
        }
        if status in _RETRYABLE:
            response["headers"] = {
                "Retry-After": {
                    "description": "seconds to wait, present with `error.retry_after`",
                    "schema": {"type": "integer", "minimum": 0},
                }
            }
        responses[name] = response
    return responses


def _operation(route: Route) -> dict[str, Any]:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": rest.ID_REGEX}}
        for name in _PATH_PARAM.findall(route.path)
    ]
    parameters.extend(route.query)
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "security": _SECURITY[route.access],
    }
    if parameters:
        operation["parameters"] = parameters
    if route.request is not None:
        operation["requestBody"] = {
            # Bodies made only of optional fields may be `{}` or left out entirely.
            "required": any(field.required for field in msgspec.structs.fields(route.request)),
            "content": {_JSON: {"schema": _ref(route.request)}},
        }
    ok: dict[str, Any] = {"description": _STATUS_TEXT.get(route.status, "OK")}
    if route.response is not None:
        ok["content"] = {_JSON: {"schema": _ref(route.response)}}
    elif route.path == "/metrics":
        ok["content"] = {"text/plain": {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(route.status): ok}
    for status, meaning in route.also:
        responses[str(status)] = {**ok, "description": meaning}
    if route.path == "/readyz":
        responses["503"] = {"description": "Not ready", "content": {_JSON: {"schema": _ref(rest.Readiness)}}}
    # Any core route can meet a dependency that is down (docs/api.md: 503 `unavailable`, with retry_after), and
    # any that takes credentials is refused with 429 once an address sent too many bad ones.
    errors = route.errors
    if route.access == VIEWER_ONLY:
        errors = (*errors, 403)  # a director key is nobody: acting as a user needs a ticket
    if route.tag == "core":
        errors = (*errors, 429, 503) if route.access != PUBLIC else (*errors, 503)
    for status in errors:
        responses.setdefault(str(status), {"$ref": f"#/components/responses/{_ERROR_RESPONSE_NAMES[status]}"})
    operation["responses"] = responses
    if route.path == "/v1/ws":
        operation["x-frames"] = {
            "client": {"$ref": "#/components/schemas/ClientFrame"},
            "server": {"$ref": "#/components/schemas/ServerFrame"},
        }
    return operation


def _rest_models() -> list[type]:
    models = {model for route in ROUTES for model in (route.request, route.response) if model is not None}
    return sorted(models, key=lambda m: m.__name__) + [ErrorBody]


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 document of docs/api.md's REST API (gatekeeper, core, push polling, health endpoints)."""
    template = "#/components/schemas/{name}"
    _, schemas = msgspec.json.schema_components(_rest_models(), ref_template=template)
    _, push_schemas = _push_components(template)
    schemas.update(push_schemas)  # same Structs, same names: PollResponse, Message, frames for /v1/ws

    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method] = _operation(route)

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "PlayToTV",
            "version": API_VERSION,
            "description": (
                "Play-along TV public API. Unknown fields in bodies are ignored; new fields are added with "
                "defaults. Errors: every non-2xx response has the ErrorBody shape. Error codes: "
                + ", ".join(f"{code.value} ({STATUS[code]})" for code in ErrorCode)
                + "."
            ),
        },
        "tags": [
            {"name": "gatekeeper", "description": "first contact and admission"},
            {"name": "core", "description": "viewer and director REST API"},
            {"name": "push", "description": "WebSocket and long-polling delivery"},
            {"name": "every role", "description": "health and metrics on each role's listener"},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": _error_responses(),
            "securitySchemes": {
                "ticket": {
                    "type": "http", "scheme": "bearer", "bearerFormat": "PlayToTV ticket",
                    "description": "the ticket from POST /v1/session",
                },
                "directorKey": {
                    "type": "http", "scheme": "bearer", "bearerFormat": "director key",
                    "description": "a key from configuration (auth.director_keys)",
                },
                "ticketQuery": {
                    "type": "apiKey", "in": "query", "name": "ticket",
                    "description": "the ticket, for transports that cannot set headers",
                },
            },
        },
    }
