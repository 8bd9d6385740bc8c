"""Director endpoints (docs/api.md §4.2). Each authenticates with a director key first, so a
viewer ticket gets 403 and nothing else happens."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from quart import Response

from playtotv.gameplay import director, series, stats
from playtotv.gameplay.documents import interaction_view
from playtotv.http import json_response
from playtotv.protocol.decoding import JsonDecoder
from playtotv.protocol.errors import ApiError
from playtotv.protocol.rest import (
    Accepted,
    close_interaction_decoder,
    create_episode_decoder,
    create_series_decoder,
    create_show_decoder,
    director_event_decoder,
    end_episode_decoder,
    interaction_body_decoder,
    open_interaction_decoder,
    reveal_interaction_decoder,
    start_episode_decoder,
)
from playtotv.roles.core.inputs import body, path_id

if TYPE_CHECKING:
    from playtotv.roles.core import CoreApi


def register(api: CoreApi) -> None:
    app, gameplay, auth, limit = api.app, api.gameplay, api.auth, api.max_body

    async def director_input(path_value: str, what: str, decoder: JsonDecoder[Any],
                             max_bytes: int = limit) -> tuple[str, Any]:
        """The director's key first (a viewer ticket gets 403 before anything is read), then the path id,
        then the bounded body."""
        auth.director()
        return path_id(path_value, what), await body(decoder, max_bytes)

    async def create_show() -> Response:
        auth.director()
        request_body = await body(create_show_decoder, limit)
        return json_response(await director.create_show(gameplay, request_body), 201)

    async def create_episode(show_id: str) -> Response:
        show_id, request_body = await director_input(show_id, "show", create_episode_decoder, api.max_director_body)
        return json_response(await director.create_episode(gameplay, show_id, request_body), 201)

    async def create_interaction(episode_id: str) -> Response:
        episode_id, request_body = await director_input(episode_id, "episode", interaction_body_decoder)
        return json_response(await director.create_interaction(gameplay, episode_id, request_body), 201)

    async def open_interaction(interaction_id: str) -> Response:
        interaction_id, request_body = await director_input(interaction_id, "interaction", open_interaction_decoder)
        return json_response(await director.open_interaction(gameplay, interaction_id, request_body.duration))

    async def close_interaction(interaction_id: str) -> Response:
        interaction_id, _ = await director_input(interaction_id, "interaction", close_interaction_decoder)
        doc = await director.close_interaction(gameplay, interaction_id)
        return json_response(interaction_view(doc, with_correct=True))

    async def reveal_interaction(interaction_id: str) -> Response:
        interaction_id, request_body = await director_input(interaction_id, "interaction", reveal_interaction_decoder)
        return json_response(await director.reveal_interaction(gameplay, interaction_id, request_body.correct))

    async def start_episode(episode_id: str) -> Response:
        episode_id, request_body = await director_input(episode_id, "episode", start_episode_decoder)
        return json_response(await director.start_episode(gameplay, episode_id, request_body.at))

    async def end_episode(episode_id: str) -> Response:
        episode_id, _ = await director_input(episode_id, "episode", end_episode_decoder)
        return json_response(await director.end_episode(gameplay, episode_id))

    async def episode_event(episode_id: str) -> Response:
        episode_id, request_body = await director_input(episode_id, "episode", director_event_decoder)
        await director.director_event(gameplay, episode_id, request_body.type, request_body.data)
        return json_response(Accepted(), 202)

    async def episode_stats(episode_id: str) -> Response:
        auth.director()
        episode_id = path_id(episode_id, "episode")
        if await gameplay.episode(episode_id) is None:
            raise ApiError("not_found", "unknown episode")
        return json_response(await stats.episode_stats(gameplay, episode_id))

    async def create_series(show_id: str) -> Response:
        show_id, request_body = await director_input(show_id, "show", create_series_decoder, api.max_director_body)
        return json_response(await series.create_series(gameplay, show_id, request_body), 201)

    async def get_series(series_id: str) -> Response:
        auth.director()
        return json_response(await series.get_series(gameplay, path_id(series_id, "series")))

    routes: list[tuple[str, Callable[..., Awaitable[Response]], str]] = [
        ("/v1/shows", create_show, "POST"),
        ("/v1/shows/<show_id>/series", create_series, "POST"),
        ("/v1/series/<series_id>", get_series, "GET"),
        ("/v1/shows/<show_id>/episodes", create_episode, "POST"),
        ("/v1/episodes/<episode_id>/interactions", create_interaction, "POST"),
        ("/v1/interactions/<interaction_id>/open", open_interaction, "POST"),
        ("/v1/interactions/<interaction_id>/close", close_interaction, "POST"),
        ("/v1/interactions/<interaction_id>/reveal", reveal_interaction, "POST"),
        ("/v1/episodes/<episode_id>/start", start_episode, "POST"),
        ("/v1/episodes/<episode_id>/end", end_episode, "POST"),
        ("/v1/episodes/<episode_id>/events", episode_event, "POST"),
        ("/v1/episodes/<episode_id>/stats", episode_stats, "GET"),
    ]
    for path, handler, method in routes:
        app.add_url_rule(path, f"director_{handler.__name__}", handler, methods=[method])
