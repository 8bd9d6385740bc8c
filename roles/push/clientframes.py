"""Decoding what a WebSocket client sends, with the push server's policy for bad input.

Bad input never costs the client its connection (docs/architecture.md §6): a frame that fails validation is
answered with an ``error`` frame. One exception to "it is an error": a ``subscribe`` whose channel is
fine but whose ``since`` is malformed still subscribes, answered ``recovered: false`` — a position that
cannot be understood is a position that cannot be filled (docs/reliability.md #2). An ``answer`` that fails
validation is answered with an ``error`` carrying its ``id`` when that much can be read, so the client
knows which request failed.
"""

from __future__ import annotations

from typing import Any

import msgspec

from playtotv.protocol.decoding import JsonDecoder
from playtotv.protocol.push import (
    MAX_CLIENT_FRAME_BYTES,
    Channel,
    ClientFrame,
    ErrorFrame,
    RequestId,
    client_frame_decoder,
    encode_frame,
)


class MalformedSince(msgspec.Struct, tag_field="type", tag="subscribe", kw_only=True):
    """A subscribe that only fails validation in ``since``."""

    channel: Channel
    since: Any = None


class _AnswerId(msgspec.Struct, tag_field="type", tag="answer", kw_only=True):
    """Just the request id of an ``answer`` frame that failed validation."""

    id: RequestId


class BadFrame(msgspec.Struct, frozen=True):
    """Answer with an ``error`` frame: ``code`` and ``message`` as in protocol.errors, ``id`` the
    request's when the frame was an ``answer``."""

    code: str
    message: str
    id: str | None = None


_malformed_since_decoder = JsonDecoder(MalformedSince)
_answer_id_decoder = JsonDecoder(_AnswerId)


def decode(raw: bytes | bytearray | str) -> ClientFrame | MalformedSince | BadFrame:
    if len(raw) > MAX_CLIENT_FRAME_BYTES:
        return BadFrame("bad_request", f"frame larger than {MAX_CLIENT_FRAME_BYTES} bytes")
    try:
        return client_frame_decoder.decode(raw)
    except msgspec.ValidationError as e:  # a subclass of DecodeError: must come first
        try:
            return _malformed_since_decoder.decode(raw)
        except msgspec.DecodeError:
            pass
        try:
            request_id: str | None = _answer_id_decoder.decode(raw).id
        except msgspec.DecodeError:
            request_id = None
        return BadFrame("bad_request", str(e), request_id)
    except msgspec.DecodeError as e:
        return BadFrame("bad_request", f"malformed JSON: {e}")


def error_frame(code: str, message: str, request_id: str | None = None, retry_after: float | None = None) -> bytes:
    return encode_frame(ErrorFrame(code=code, message=message, id=request_id, retry_after=retry_after))
