"""Viewer endpoints (docs/api.md §4.5). Viewers are rate limited per ticket; a director key may
call the read endpoints (it sees ``correct`` early, and is nobody on a leaderboard)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec
from quart import Response, request

from playtotv.gameplay import answers, director, friends, leaderboard, notifications, profile, results
from playtotv.gameplay.answers import AnswerItem
from playtotv.gameplay.documents import interaction_view
from playtotv.http import json_response
from playtotv.protocol.errors import ApiError
from playtotv.protocol.kinds import kind_list
from playtotv.protocol.rest import (
    AnswerAccepted,
    add_friend_decoder,
    answer_request_decoder,
    update_profile_decoder,
)
from playtotv.roles.core.inputs import body, leaderboard_query, path_id

if TYPE_CHECKING:
    from playtotv.roles.core import CoreApi


def register(api: CoreApi) -> None:
    app, gameplay, auth, limit = api.app, api.gameplay, api.auth, api.max_body

    async def interaction_or_404(interaction_id: str):
        doc = await gameplay.interaction(path_id(interaction_id, "interaction"))
        if doc is None:
            raise ApiError("not_found", "unknown interaction")
        return doc

    # -- the hot path -----------------------------------------------------------------------------------
    async def answer(interaction_id: str) -> Response:
        user_id = auth.viewer().require_user()
        interaction_id = path_id(interaction_id, "interaction")
        choice = (await body(answer_request_decoder, limit)).choice
        now = time.time()
        doc = answers.validate(await gameplay.interaction(interaction_id), choice, now)
        item = AnswerItem(doc.id, doc.episode_id, user_id, choice, now)
        if not await api.batcher.submit(item, answers.dedupe_ttl(doc, now)):
            raise ApiError("already_answered", "you already answered this interaction")
        return json_response(AnswerAccepted(received_at=now), 202)

    # -- reads ------------------------------------------------------------------------------------------
    async def get_episode(episode_id: str) -> Response:
        caller = auth.viewer()
        doc = await gameplay.episode(path_id(episode_id, "episode"))
        if doc is None:
            raise ApiError("not_found", "unknown episode")
        return json_response(await director.episode_view_of(gameplay, doc, director=caller.director))

    async def get_interaction(interaction_id: str) -> Response:
        caller = auth.viewer()
        doc = await interaction_or_404(interaction_id)
        return json_response(interaction_view(doc, with_correct=caller.director))

    async def get_results(interaction_id: str) -> Response:
        auth.viewer()
        doc = await interaction_or_404(interaction_id)
        return json_response(await results.results(gameplay, doc))

    async def get_friend_choices(interaction_id: str) -> Response:
        user_id = auth.viewer().require_user()
        doc = await interaction_or_404(interaction_id)
        return json_response(await friends.choices(gameplay, user_id, doc, time.time()))

    async def get_leaderboard(episode_id: str) -> Response:
        caller = auth.viewer()
        episode_id = path_id(episode_id, "episode")
        scope, count = leaderboard_query()
        if await gameplay.episode(episode_id) is None:
            raise ApiError("not_found", "unknown episode")
        following = await friends.following(gameplay, caller.user_id) if caller.user_id and scope == "friends" else []
        return json_response(await leaderboard.board(gameplay, episode_id, scope=scope,
                                                     limit=count, me=caller.user_id, following=following))

    # -- public -----------------------------------------------------------------------------------------
    kinds = msgspec.json.encode(kind_list())  # fixed for the life of the process: encoded once

    async def list_kinds() -> Response:
        # Every /play page loads it: a page may keep it for a few minutes.
        return Response(kinds, content_type="application/json", headers={"Cache-Control": "public, max-age=300"})

    # -- the caller's own data --------------------------------------------------------------------------
    async def get_me() -> Response:
        user_id = auth.viewer().require_user()
        return json_response(await profile.profile(gameplay, user_id))

    async def put_me() -> Response:
        user_id = auth.viewer().require_user()
        name = (await body(update_profile_decoder, limit)).name
        return json_response(await profile.rename(gameplay, user_id, name))

    async def add_friend() -> Response:
        user_id = auth.viewer().require_user()
        target = (await body(add_friend_decoder, limit)).user_id
        friend, created = await friends.follow(gameplay, user_id, target)
        return json_response(friend, 201 if created else 200)

    async def remove_friend(friend_id: str) -> Response:
        user_id = auth.viewer().require_user()
        friend_id = path_id(friend_id, "user")
        if not await friends.unfollow(gameplay, user_id, friend_id) and await gameplay.user(friend_id) is None:
            raise ApiError("not_found", "unknown user")
        return json_response(await friends.friend_list(gameplay, user_id))

    async def list_friends() -> Response:
        user_id = auth.viewer().require_user()
        return json_response(await friends.friend_list(gameplay, user_id))

    async def list_notifications() -> Response:
        user_id = auth.viewer().require_user()
        since = request.args.get("since") or None
        return json_response(await notifications.list_for(gameplay, user_id, since, time.time()))

    routes: list[tuple[str, Callable[..., Awaitable[Response]], str]] = [
        ("/v1/interactions/<interaction_id>/answers", answer, "POST"),
        ("/v1/episodes/<episode_id>", get_episode, "GET"),
        ("/v1/interactions/<interaction_id>", get_interaction, "GET"),
        ("/v1/interactions/<interaction_id>/results", get_results, "GET"),
        ("/v1/interactions/<interaction_id>/friends", get_friend_choices, "GET"),
        ("/v1/episodes/<episode_id>/leaderboard", get_leaderboard, "GET"),
        ("/v1/me", get_me, "GET"),
        ("/v1/me", put_me, "PUT"),
        ("/v1/me/friends", add_friend, "POST"),
        ("/v1/me/friends/<friend_id>", remove_friend, "DELETE"),
        ("/v1/me/friends", list_friends, "GET"),
        ("/v1/me/notifications", list_notifications, "GET"),
        ("/v1/kinds", list_kinds, "GET"),
    ]
    for path, handler, method in routes:
        app.add_url_rule(path, f"viewer_{handler.__name__}", handler, methods=[method])
