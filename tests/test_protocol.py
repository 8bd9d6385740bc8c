"""The wire protocol: decoding, validation, tagged unions, faithful encoding, frame helpers, schemas."""

from __future__ import annotations

import ast
import json
import math
import pathlib
import re
import typing

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from playtotv.protocol import contract, errors, push, rest
from playtotv.protocol.errors import STATUS, ApiError, ErrorCode

PROTOCOL_DIR = pathlib.Path(rest.__file__).parent

QUIZ = {
    "kind": "quiz",
    "prompt": "Who wins?",
    "options": [{"id": "a", "label": "Ann"}, {"id": "b", "label": "Bob"}],
    "correct": "a",
    "duration": 15,
    "points": 1000,
}


def enc(obj) -> bytes:
    return msgspec.json.encode(obj)


# -- errors --------------------------------------------------------------------------------------------------

API_MD_ERROR_TABLE = {
    "bad_request": 400, "unauthorized": 401, "forbidden": 403, "not_found": 404,
    "already_answered": 409, "interaction_closed": 409, "invalid_state": 409,
    "invalid_choice": 422, "rate_limited": 429, "at_capacity": 503, "unavailable": 503,
}


def test_error_codes_match_api_md_table():
    assert {code.value: status for code, status in STATUS.items()} == API_MD_ERROR_TABLE
    assert set(ErrorCode) == set(STATUS)


def test_api_error_body_and_headers():
    err = ApiError("at_capacity", "full", retry_after=4.2)
    assert err.status == 503 and err.code is ErrorCode.AT_CAPACITY
    assert json.loads(err.encode()) == {"error": {"code": "at_capacity", "message": "full", "retry_after": 4.2}}
    assert err.headers() == {"Retry-After": "5"}  # rounded up: never retry too early

    plain = ApiError(ErrorCode.NOT_FOUND, "no such episode")
    assert json.loads(plain.encode()) == {"error": {"code": "not_found", "message": "no such episode"}}
    assert plain.headers() == {}
    assert ApiError("invalid_choice").message  # a default message, never an empty one


def test_api_error_rejects_unknown_code():
    with pytest.raises(ValueError):
        ApiError("teapot")


def test_error_body_decodes_unknown_codes():
    body = msgspec.json.decode(b'{"error": {"code": "brand_new", "message": "m", "x": 1}}', type=errors.ErrorBody)
    assert body.error.code == "brand_new" and body.error.retry_after is None


def test_bad_request_from_validation_error_names_the_field():
    with pytest.raises(msgspec.ValidationError) as info:
        rest.interaction_body_decoder.decode(enc({**QUIZ, "points": "many"}))
    err = errors.bad_request(info.value)
    assert err.status == 400 and "points" in err.message


@pytest.mark.parametrize("text", ["Ann\x00", "Ann\n", "\tAnn", "A\x7fnn", "A\x9bnn", "\u202eAnn", "Ann\u2066",
                                  "Ann\u2028"])
def test_display_text_refuses_control_and_bidi_override_characters(text):
    with pytest.raises(msgspec.ValidationError) as info:
        rest.update_profile_decoder.decode(enc({"name": text}))
    err = errors.bad_request(info.value)
    assert err.status == 400 and err.message.startswith("text may not contain control characters")
    assert err.message.endswith("- at `$.name`")


@pytest.mark.parametrize("text", ["Ann", "Zoë", "אב‏!", "العرب", "👨‍👩‍👧", "a b"])
def test_display_text_accepts_any_script_emoji_and_directional_marks(text):
    assert rest.update_profile_decoder.decode(enc({"name": text})).name == text


def test_display_text_type_is_shared_by_every_text_people_read():
    from playtotv.protocol.text import DISPLAY_TEXT_PATTERN, DisplayText

    for alias in (rest.Title, rest.Prompt, rest.Label, rest.Name):
        assert DisplayText.__metadata__[0] in alias.__metadata__
    # The pattern means the same to an ECMAScript validator of the published OpenAPI document.
    assert "\\Z" not in DISPLAY_TEXT_PATTERN and DISPLAY_TEXT_PATTERN.startswith("^")


# -- REST requests -------------------------------------------------------------------------------------------

def test_interaction_body_round_trip():
    body = rest.interaction_body_decoder.decode(enc(QUIZ))
    assert body.options[1] == rest.Option(id="b", label="Bob")
    assert body.duration == 15.0 and body.points == 1000
    rest.check_interaction(body)
    assert rest.interaction_body_decoder.decode(enc(body)) == body


def test_rating_body_takes_a_scale_of_two_ints():
    body = rest.interaction_body_decoder.decode(b'{"kind": "rating", "prompt": "How good?", "scale": [1, 5]}')
    assert body.scale == (1, 5) and body.options == []
    rest.check_interaction(body)
    for scale in ([1], [1, 2, 3], [1, "5"], [1.5, 5]):
        with pytest.raises(msgspec.ValidationError):
            rest.interaction_body_decoder.decode(enc({"kind": "rating", "prompt": "p", "scale": scale}))


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "trivia"},
        {"prompt": ""},
        {"prompt": "x" * 501},
        {"options": [{"id": str(i), "label": "l"} for i in range(11)]},
        {"options": [{"id": "", "label": "l"}, {"id": "b", "label": "l"}]},
        {"options": [{"id": "a b", "label": "l"}, {"id": "b", "label": "l"}]},  # ids are URL-safe
        {"options": [{"id": "a", "label": ""}, {"id": "b", "label": "l"}]},
        {"duration": 0},
        {"duration": 3601},
        {"points": -1},
        {"points": 100_001},
        {"points": 1.5},
        {"prompt": 7},
    ],
)
def test_interaction_body_rejects_what_msgspec_can_check(change):
    with pytest.raises(msgspec.ValidationError):
        rest.interaction_body_decoder.decode(enc({**QUIZ, **change}))


@pytest.mark.parametrize(
    "body",
    [
        {**QUIZ, "correct": None},  # a quiz needs its answer
        {**QUIZ, "correct": "z"},  # ... among its options
        {**QUIZ, "options": [{"id": "a", "label": "x"}]},  # at least two options
        {**QUIZ, "options": [{"id": "a", "label": "x"}, {"id": "a", "label": "y"}]},  # unique ids
        {**QUIZ, "kind": "poll"},  # correct is quiz-only
        {"kind": "poll", "prompt": "p"},  # no options
        {"kind": "rating", "prompt": "p"},  # no scale
        {"kind": "rating", "prompt": "p", "scale": [5, 1]},
        {"kind": "rating", "prompt": "p", "scale": [0, 1000]},
        {"kind": "rating", "prompt": "p", "scale": [1, 5], "options": QUIZ["options"]},
        {"kind": "vote", "prompt": "p", "options": QUIZ["options"], "scale": [1, 5]},
    ],
)
def test_check_interaction_cross_field_rules(body):
    decoded = rest.interaction_body_decoder.decode(enc(body))
    with pytest.raises(ApiError) as info:
        rest.check_interaction(decoded)
    assert info.value.status == 400


def test_prediction_without_correct_is_valid():
    body = {"kind": "prediction", "prompt": "Who wins?", "options": QUIZ["options"]}
    rest.check_interaction(rest.interaction_body_decoder.decode(enc(body)))


def test_create_episode_with_timeline():
    body = rest.create_episode_decoder.decode(
        enc({"title": "E1", "mode": "prerecorded", "starts_at": 1764166400.0,
             "timeline": [{"at": 30, "interaction": QUIZ}]})
    )
    assert body.mode == "prerecorded" and body.timeline[0].at == 30.0
    assert body.timeline[0].interaction.correct == "a"
    with pytest.raises(msgspec.ValidationError):
        rest.create_episode_decoder.decode(b'{"title": "E1", "mode": "taped"}')
    with pytest.raises(msgspec.ValidationError):
        rest.create_episode_decoder.decode(enc({"title": "t" * 201}))


def test_answer_choice_is_str_or_int():
    assert rest.answer_request_decoder.decode(b'{"choice": "a"}').choice == "a"
    assert rest.answer_request_decoder.decode(b'{"choice": 4}').choice == 4
    for bad in (b'{"choice": 4.5}', b'{"choice": null}', b'{"choice": true}', b"{}", b'{"choice": ""}'):
        with pytest.raises(msgspec.ValidationError):
            rest.answer_request_decoder.decode(bad)


def test_check_choice():
    quiz = rest.InteractionView(id="i1", episode_id="E1", kind="quiz", prompt="p", status="open",
                                options=[rest.Option(id="a", label="A"), rest.Option(id="b", label="B")])
    rest.check_choice(quiz, "b")
    rating = rest.InteractionView(id="i2", episode_id="E1", kind="rating", prompt="p", status="open",
                                  scale=(1, 5))
    rest.check_choice(rating, 5)
    for interaction, choice in ((quiz, "c"), (quiz, 1), (rating, 6), (rating, 0), (rating, "3")):
        with pytest.raises(ApiError) as info:
            rest.check_choice(interaction, choice)
        assert info.value.code is ErrorCode.INVALID_CHOICE and info.value.status == 422


def test_unknown_fields_are_ignored():
    req = rest.session_request_decoder.decode(b'{"name": "Ann", "transports": ["sse", "polling"], "future": {"x": 1}}')
    assert req.name == "Ann" and req.transports == ["sse", "polling"] and req.user_id is None
    assert rest.answer_request_decoder.decode(b'{"choice": "a", "client_ts": 1}').choice == "a"


def test_empty_director_bodies_decode_to_defaults():
    assert rest.decode_request(rest.open_interaction_decoder, b"").duration is None
    assert rest.decode_request(rest.open_interaction_decoder, b"{}").duration is None
    assert rest.decode_request(rest.open_interaction_decoder, b'{"duration": 20}').duration == 20
    assert rest.decode_request(rest.reveal_interaction_decoder, b'{"correct": "b"}').correct == "b"
    assert rest.decode_request(rest.start_episode_decoder, b" ").at is None
    assert rest.decode_request(rest.close_interaction_decoder, b"{}") == rest.CloseInteraction()
    assert rest.decode_request(rest.end_episode_decoder, b"{}") == rest.EndEpisode()
    event = rest.decode_request(rest.director_event_decoder, b'{"type": "goal", "data": {"team": "home"}}')
    assert event.type == "goal" and event.data == {"team": "home"}
    assert rest.decode_request(rest.session_request_decoder, b"") == rest.SessionRequest()


@pytest.mark.parametrize(
    "decoder, body",
    [
        (rest.create_show_decoder, b"{not json"),
        (rest.create_show_decoder, b'{"title": ""}'),
        (rest.create_show_decoder, b"[]"),
        (rest.update_profile_decoder, b'{"name": 5}'),
        (rest.add_friend_decoder, b'{"user_id": "$where"}'),  # never reaches a Mongo query or Redis key
        (rest.open_interaction_decoder, b'{"duration": -1}'),
        (rest.answer_request_decoder, b"x" * (rest.MAX_BODY_BYTES + 1)),
    ],
)
def test_decode_request_failures_are_400(decoder, body):
    with pytest.raises(ApiError) as info:
        rest.decode_request(decoder, body)
    assert info.value.status == 400 and info.value.code is ErrorCode.BAD_REQUEST


# -- REST responses: faithful to docs/api.md ----------------------------------------------------------------------

def test_episode_view_emits_current_null():
    view = rest.EpisodeView(id="E1", show_id="S1", title="t", mode="live", status="scheduled",
                            channel="episode:E1", current=None, server_time=1.5)
    assert json.loads(enc(view)) == {"id": "E1", "show_id": "S1", "title": "t", "mode": "live",
                                     "status": "scheduled", "channel": "episode:E1", "current": None,
                                     "server_time": 1.5}


def test_results_emit_correct_null_and_average_only_for_ratings():
    poll = json.loads(enc(rest.Results(total=2, counts={"a": 1, "b": 1}, percent={"a": 50.0, "b": 50.0},
                                       correct=None)))
    assert poll == {"total": 2, "counts": {"a": 1, "b": 1}, "percent": {"a": 50.0, "b": 50.0}, "correct": None}
    rating = json.loads(enc(rest.Results(total=1, counts={"4": 1}, percent={"4": 100.0}, correct=None,
                                         average=4.0)))
    assert rating["average"] == 4.0 and rating["correct"] is None


def test_interaction_view_omits_correct_until_set():
    view = rest.InteractionView(id="i1", episode_id="E1", kind="quiz", prompt="p", status="open",
                                options=[rest.Option(id="a", label="A"), rest.Option(id="b", label="B")],
                                points=1000, opens_at=10.0, closes_at=25.0)
    assert "correct" not in json.loads(enc(view))
    revealed = msgspec.structs.replace(view, status="revealed", correct="a")
    assert json.loads(enc(revealed))["correct"] == "a"


def test_leaderboard_me_and_rank_null():
    board = rest.Leaderboard(entries=[rest.LeaderboardEntry(rank=1, user_id="u1", name="Ann", score=900)],
                             me=rest.LeaderboardMe(rank=None, score=0))
    assert json.loads(enc(board))["me"] == {"rank": None, "score": 0}
    assert json.loads(enc(msgspec.structs.replace(board, me=None)))["me"] is None


def test_session_response_round_trip():
    resp = rest.SessionResponse(
        ticket="t.s", user_id="u_1", expires_at=2.0, server_time=1.0, core=["http://10.0.0.5:8001"],
        push=[rest.PushEndpoints(websocket="ws://h:8002/v1/ws", polling="http://h:8003/v1/poll")], max_rtt_ms=800,
    )
    assert msgspec.json.decode(enc(resp), type=rest.SessionResponse) == resp
    only_polling = json.loads(enc(rest.PushEndpoints(polling="http://h:8003/v1/poll")))
    assert only_polling == {"polling": "http://h:8003/v1/poll"}


def test_profile_and_notifications():
    profile = rest.Profile(user_id="u1", name="Ann", score=10,
                           achievements=[rest.Achievement(id="first_answer", title="First answer")])
    data = json.loads(enc(profile))
    assert {"user_id", "name", "score", "achievements", "lifetime_points", "tier"} <= set(data)
    note = rest.Notification(id="n1", kind="friend_answered", created_at=3.0, user_id="u2", name="Bob")
    listing = json.loads(enc(rest.NotificationList(notifications=[note], cursor="n1")))
    assert listing == {"notifications": [{"type": "notification", "id": "n1", "kind": "friend_answered",
                                          "created_at": 3.0, "user_id": "u2", "name": "Bob"}],
                       "cursor": "n1"}


# -- push: client frames ---------------------------------------------------------------------------------------

def describe(frame: push.ClientFrame) -> str:
    match frame:
        case push.Subscribe(channel=channel, since=None):
            return f"subscribe {channel}"
        case push.Subscribe(channel=channel, since=push.Since(epoch=epoch, offset=offset)):
            return f"subscribe {channel} after {epoch}/{offset}"
        case push.Unsubscribe(channel=channel):
            return f"unsubscribe {channel}"
        case push.Ping():
            return "ping"
        case push.Answer(id=request_id, interaction_id=interaction_id, choice=choice):
            return f"answer {request_id} {interaction_id} {choice!r}"
    raise AssertionError(frame)


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b'{"type": "subscribe", "channel": "episode:E1"}', "subscribe episode:E1"),
        (b'{"type": "subscribe", "channel": "episode:E1", "since": {"epoch": "x", "offset": 41}}',
         "subscribe episode:E1 after x/41"),
        (b'{"channel": "user:u_1", "type": "unsubscribe", "extra": [1]}', "unsubscribe user:u_1"),
        (b'{"type": "ping"}', "ping"),
        (b'{"type": "answer", "id": "r1", "interaction_id": "i_1", "choice": "a"}', "answer r1 i_1 'a'"),
        (b'{"type": "answer", "id": "r2", "interaction_id": "i_1", "choice": 4}', "answer r2 i_1 4"),
    ],
)
def test_client_frame_dispatch(raw, expected):
    assert describe(push.client_frame_decoder.decode(raw)) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type": "publish", "channel": "episode:E1"}',  # clients cannot publish
        b'{"channel": "episode:E1"}',  # no tag
        b'{"type": "subscribe"}',
        b'{"type": "subscribe", "channel": 5}',
        b'{"type": "subscribe", "channel": "episode:E1 *"}',  # reaches broker keys: validated
        b'{"type": "subscribe", "channel": "nochannel"}',
        b'{"type": "subscribe", "channel": "episode:E1", "since": {"epoch": "x", "offset": -1}}',
        b'{"type": "subscribe", "channel": "episode:E1", "since": {"offset": 3}}',
        b'["ping"]',
        b'{"type": "answer", "interaction_id": "i_1", "choice": "a"}',  # no request id
        b'{"type": "answer", "id": "", "interaction_id": "i_1", "choice": "a"}',
        b'{"type": "answer", "id": "r1", "interaction_id": "i_1", "choice": true}',
        b'{"type": "answer", "id": "r1", "interaction_id": "i_1", "choice": ""}',
    ],
)
def test_bad_client_frames_are_validation_errors(raw):
    with pytest.raises(msgspec.ValidationError):
        push.client_frame_decoder.decode(raw)


def test_malformed_client_frame_is_decode_error():
    with pytest.raises(msgspec.DecodeError):
        push.client_frame_decoder.decode(b'{"type": "ping"')


# -- push: server frames ---------------------------------------------------------------------------------------

SCORE = push.ScoreUpdated(interaction_id="i1", points=950, total=4200, rank=None)


def test_server_frames_round_trip():
    data = push.encode_frame(SCORE)
    frames = [
        push.Message(channel="user:u1", epoch="x", offset=45, sent_at=1764166400.1, data=msgspec.Raw(data)),
        push.Subscribed(channel="episode:E1", epoch="x", offset=44, recovered=False),
        push.Pong(server_time=1764166400.5),
        push.ErrorFrame(code="forbidden", message="not your channel"),
        push.Reconnect(after=0.5),
        push.AnswerAcceptedFrame(id="r1", received_at=1764166400.5),
        push.ErrorFrame(code="rate_limited", message="too fast", id="r2", retry_after=0.1),
    ]
    for frame in frames:
        decoded = push.server_frame_decoder.decode(push.encode_frame(frame))
        assert type(decoded) is type(frame)
        assert push.encode_frame(decoded) == push.encode_frame(frame)
    assert json.loads(push.encode_frame(frames[1])) == {
        "type": "subscribed", "channel": "episode:E1", "epoch": "x", "offset": 44, "recovered": False,
        "missed": []}
    assert json.loads(push.encode_frame(frames[4])) == {"type": "reconnect", "after": 0.5}
    # An error settling no answer carries no ``id``; one settling an answer carries it.
    assert json.loads(push.encode_frame(frames[3])) == {"type": "error", "code": "forbidden",
                                                         "message": "not your channel"}
    assert json.loads(push.encode_frame(frames[6])) == {"type": "error", "code": "rate_limited", "message": "too fast",
                                                         "id": "r2", "retry_after": 0.1}


def test_message_data_dispatch_on_dotted_tags():
    interaction = rest.InteractionView(id="i1", episode_id="E1", kind="poll", prompt="p", status="open",
                                       options=[rest.Option(id="a", label="A"), rest.Option(id="b", label="B")])
    results = rest.Results(total=1, counts={"a": 1}, percent={"a": 100.0}, correct=None)
    samples = [
        push.EpisodeStarted(episode_id="E1", started_at=1.0),
        push.EpisodeEnded(episode_id="E1"),
        push.InteractionOpened(interaction=interaction),
        push.InteractionClosed(interaction_id="i1"),
        push.InteractionRevealed(interaction_id="i1", correct=None, results=results),
        push.StatsUpdated(interaction_id="i1", counts={"a": 3}, total=3),
        push.LeaderboardUpdated(episode_id="E1"),
        push.DirectorEventData(event_type="goal", data={"team": "home"}),
        SCORE,
        rest.Notification(id="n1", kind="achievement", created_at=1.0,
                          achievement=rest.Achievement(id="streak_3")),
    ]
    members = typing.get_args(push.MessageData)
    assert {type(sample) for sample in samples} == set(members)  # a sample of every member of the union
    for sample in samples:
        raw = push.encode_frame(sample)
        assert json.loads(raw)["type"] == type(sample).__struct_config__.tag
        assert push.message_data_decoder.decode(raw) == sample
    assert len({member.__struct_config__.tag for member in members}) == len(members)  # tags are distinct
    revealed = json.loads(push.encode_frame(samples[4]))
    assert revealed["correct"] is None  # explicit null, like results' correct
    assert json.loads(push.encode_frame(SCORE))["rank"] is None


def test_unknown_message_data_type_is_validation_error():
    with pytest.raises(msgspec.ValidationError):
        push.message_data_decoder.decode(b'{"type": "confetti.fired"}')


def test_message_data_ignores_unknown_fields():
    data = push.message_data_decoder.decode(b'{"type": "interaction.closed", "interaction_id": "i1", "why": "t"}')
    assert data == push.InteractionClosed(interaction_id="i1")


# -- push: frame helpers ---------------------------------------------------------------------------------------

def reference_message(channel, epoch, offset, sent_at, data: bytes) -> bytes:
    return push.encode_frame(push.Message(channel=channel, epoch=epoch, offset=offset, sent_at=sent_at,
                                          data=msgspec.Raw(data)))


TRICKY_CHANNELS = [
    "episode:E1",
    "",
    'episode:"quoted"',
    "back\\slash",
    "new\nline\ttab\r\x00\x1f",
    "</script><script>",
    "ünïcödé:épisode",
    "emoji:\U0001f4fa",
    "surrogate-range:\u2028\u2029",
    "x" * 500,
]


@pytest.mark.parametrize("channel", TRICKY_CHANNELS)
def test_message_frame_equals_reference_encoding(channel):
    data = push.encode_frame(SCORE)
    frame = push.encode_message_frame(channel, 'ep"och', 45, 1764166400.1, data)
    assert frame == reference_message(channel, 'ep"och', 45, 1764166400.1, data)
    decoded = json.loads(frame)
    assert decoded["channel"] == channel and decoded["epoch"] == 'ep"och'
    assert decoded["data"] == json.loads(data)
    assert list(decoded) == ["type", "channel", "epoch", "offset", "sent_at", "data"]


@given(
    channel=st.text(),
    epoch=st.text(max_size=20),
    offset=st.integers(min_value=0, max_value=2**63 - 1),
    sent_at=st.floats(allow_nan=False, allow_infinity=False),
)
def test_message_frame_any_input_is_valid_json(channel, epoch, offset, sent_at):
    data = b'{"type":"interaction.closed","interaction_id":"i1"}'
    frame = push.encode_message_frame(channel, epoch, offset, sent_at, data)
    assert frame == reference_message(channel, epoch, offset, sent_at, data)
    decoded = json.loads(frame)
    assert (decoded["channel"], decoded["epoch"], decoded["offset"]) == (channel, epoch, offset)
    assert decoded["sent_at"] == sent_at


def test_message_frame_never_emits_invalid_floats():
    frame = push.encode_message_frame("episode:E1", "x", 0, math.nan, b"{}")
    assert json.loads(frame)["sent_at"] is None


def test_subscribed_and_poll_helpers_splice_message_frames():
    data = push.encode_frame(SCORE)
    frames = [push.encode_message_frame("episode:E\"1", "x", n, 10.0 + n, data) for n in (42, 43)]
    messages = [push.server_frame_decoder.decode(f) for f in frames]

    subscribed = push.encode_subscribed_frame("episode:E\"1", "x", 43, True, frames)
    reference = push.encode_frame(push.Subscribed(channel="episode:E\"1", epoch="x", offset=43, recovered=True,
                                                  missed=messages))
    assert subscribed == reference
    assert push.encode_subscribed_frame("c:d", "y", 0, False, []) == push.encode_frame(
        push.Subscribed(channel="c:d", epoch="y", offset=0, recovered=False))

    poll = push.encode_poll_response("episode:E\"1", "x", 43, True, frames)
    assert poll == push.encode_frame(push.PollResponse(channel="episode:E\"1", epoch="x", offset=43,
                                                       recovered=True, messages=messages))
    decoded = push.poll_response_decoder.decode(poll)
    assert [m.offset for m in decoded.messages] == [42, 43]
    assert push.message_data_decoder.decode(decoded.messages[0].data) == SCORE


# -- schemas ---------------------------------------------------------------------------------------------------

# Every method and path of docs/api.md, as written there.
API_MD_PATHS = {
    ("post", "/v1/session"), ("get", "/v1/status"),
    ("post", "/v1/shows"), ("post", "/v1/shows/{show_id}/episodes"),
    ("post", "/v1/episodes/{episode_id}/interactions"),
    ("post", "/v1/interactions/{id}/open"), ("post", "/v1/interactions/{id}/close"),
    ("post", "/v1/interactions/{id}/reveal"),
    ("post", "/v1/episodes/{episode_id}/start"), ("post", "/v1/episodes/{episode_id}/end"),
    ("post", "/v1/episodes/{episode_id}/events"), ("get", "/v1/episodes/{episode_id}/stats"),
    ("get", "/v1/episodes/{episode_id}"), ("get", "/v1/interactions/{id}"),
    ("post", "/v1/interactions/{id}/answers"), ("get", "/v1/interactions/{id}/results"),
    ("get", "/v1/interactions/{id}/friends"), ("get", "/v1/episodes/{episode_id}/leaderboard"),
    ("get", "/v1/me"), ("put", "/v1/me"),
    ("post", "/v1/me/friends"), ("delete", "/v1/me/friends/{user_id}"), ("get", "/v1/me/friends"),
    ("get", "/v1/me/notifications"),
    ("get", "/v1/ws"), ("get", "/v1/poll"),
    ("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics"),
}


def refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(document: dict, ref: str):
    assert ref.startswith("#/"), ref
    node = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


#: Endpoints we added beyond docs/api.md (allowed: "add freely"), each documented in the README.
ADDITIONS = {("post", "/v1/shows/{show_id}/series"), ("get", "/v1/series/{series_id}"), ("get", "/v1/kinds")}


def test_openapi_document_covers_api_md():
    document = json.loads(json.dumps(contract.openapi_document()))  # JSON-serialisable as is
    assert document["openapi"].startswith("3.1")
    present = {(method, path) for path, item in document["paths"].items() for method in item}
    assert present >= API_MD_PATHS  # every path of the contract...
    assert present - API_MD_PATHS == ADDITIONS  # ...and our documented additions, nothing else
    for ref in set(refs(document)):
        resolve(document, ref)  # every reference lands somewhere
    operation_ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_openapi_security_and_errors():
    document = contract.openapi_document()
    paths = document["paths"]
    assert paths["/v1/shows"]["post"]["security"] == [{"directorKey": []}]
    assert {"ticket": []} in paths["/v1/episodes/{episode_id}"]["get"]["security"]
    assert {"directorKey": []} in paths["/v1/episodes/{episode_id}"]["get"]["security"]
    assert paths["/v1/session"]["post"]["security"] == []
    assert paths["/v1/session"]["post"]["responses"]["503"] == {"$ref": "#/components/responses/Unavailable"}
    unavailable = document["components"]["responses"]["Unavailable"]
    assert "at_capacity" in unavailable["description"] and "Retry-After" in unavailable["headers"]
    answers = paths["/v1/interactions/{id}/answers"]["post"]
    assert answers["requestBody"]["required"] is True
    assert set(answers["responses"]) >= {"202", "400", "401", "404", "409", "422"}
    assert paths["/v1/interactions/{id}/open"]["post"]["requestBody"]["required"] is False  # `{}` or nothing
    results = document["components"]["schemas"]["Results"]
    assert "correct" in results["required"]


def test_push_json_schema():
    document = json.loads(json.dumps(contract.push_json_schema()))
    defs = document["$defs"]
    tags = {name: defs[name]["discriminator"]["mapping"] for name in ("ClientFrame", "ServerFrame", "MessageData")}
    assert set(tags["ClientFrame"]) == {"subscribe", "unsubscribe", "ping", "answer"}
    assert set(tags["ServerFrame"]) == {"subscribed", "message", "pong", "error", "reconnect", "answer.accepted"}
    assert "interaction.opened" in tags["MessageData"] and "notification" in tags["MessageData"]
    assert defs["Message"]["properties"]["data"] == {"$ref": "#/$defs/MessageData"}
    assert "PollResponse" in defs
    for ref in set(refs(document)):
        resolve(document, ref)


# -- the package's boundary ------------------------------------------------------------------------------------

ALLOWED_IMPORTS = {"__future__", "collections", "enum", "re", "typing", "msgspec"}


@pytest.mark.parametrize("path", sorted(PROTOCOL_DIR.glob("*.py")), ids=lambda p: p.name)
def test_protocol_imports_nothing_of_ours_and_no_io(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: within protocol
                continue
            assert node.module.split(".")[0] in ALLOWED_IMPORTS, f"{path.name} imports {node.module}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name.split(".")[0] in ALLOWED_IMPORTS, f"{path.name} imports {alias.name}"
    assert not re.search(r"\bopen\(", path.read_text())
