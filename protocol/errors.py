"""The error contract (docs/api.md §2): one body shape, a closed set of codes, each with its status.

Servers raise :class:`ApiError` anywhere in a request and translate it once, at the HTTP boundary, with
:meth:`ApiError.encode` and :meth:`ApiError.headers`. The push server reuses the same codes in its
``error`` frames, so a client needs one table of codes for both transports.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec
from msgspec import Meta

from .text import DISPLAY_TEXT_PATTERN, DISPLAY_TEXT_RULE


class ErrorCode(enum.StrEnum):
    """Every code of docs/api.md's table. A ``StrEnum`` so a member *is* its wire string."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    ALREADY_ANSWERED = "already_answered"
    INTERACTION_CLOSED = "interaction_closed"
    INVALID_STATE = "invalid_state"
    INVALID_CHOICE = "invalid_choice"
    RATE_LIMITED = "rate_limited"
    AT_CAPACITY = "at_capacity"
    UNAVAILABLE = "unavailable"


#: HTTP status of each code; the codes sharing 409 / 503 differ only in their ``code``.
STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.ALREADY_ANSWERED: 409,
    ErrorCode.INTERACTION_CLOSED: 409,
    ErrorCode.INVALID_STATE: 409,
    ErrorCode.INVALID_CHOICE: 422,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.AT_CAPACITY: 503,
    ErrorCode.UNAVAILABLE: 503,
}

#: Messages are for humans and logs; bounding them keeps an error body small whatever raised it.
MAX_MESSAGE_CHARS = 500


class ErrorDetail(msgspec.Struct, kw_only=True, omit_defaults=True):
    # ``code`` is a plain string on the wire type so that a client built today still decodes an error
    # carrying a code added tomorrow; servers build it from ``ErrorCode``.
    code: str
    message: str = ""
    # Present only where retrying makes sense (docs/api.md); omitted otherwise, never ``null``.
    retry_after: Annotated[float, Meta(ge=0)] | None = None


class ErrorBody(msgspec.Struct, kw_only=True):
    error: ErrorDetail


_encoder = msgspec.json.Encoder()


class ApiError(Exception):
    """A failure to report to the client: a code from the contract, its status, a message.

    ``code`` may be given as an :class:`ErrorCode` or its string; an unknown code is a programming error
    (``ValueError``), not something to send to a client.
    """

    def __init__(self, code: ErrorCode | str, message: str = "", retry_after: float | None = None):
        try:
            self.code = ErrorCode(code)
        except ValueError:
            raise ValueError(f"unknown error code {code!r}") from None
        self.status = STATUS[self.code]
        self.message = message[:MAX_MESSAGE_CHARS] or self.code.value.replace("_", " ")
        self.retry_after = retry_after
        super().__init__(self.code.value, self.message)

    def __repr__(self) -> str:
        extra = f", retry_after={self.retry_after!r}" if self.retry_after is not None else ""
        return f"ApiError({self.code.value!r}, {self.message!r}{extra})"

    def __str__(self) -> str:
        return f"{self.status} {self.code.value}: {self.message}"

    def body(self) -> ErrorBody:
        return ErrorBody(
            error=ErrorDetail(code=self.code.value, message=self.message, retry_after=self.retry_after)
        )

    def encode(self) -> bytes:
        """The JSON response body."""
        return _encoder.encode(self.body())

    def headers(self) -> dict[str, str]:
        """Headers that go with the body: ``Retry-After`` whenever ``retry_after`` is set (docs/api.md).

        The header takes whole seconds (RFC 9110), rounded up so a client never retries too early.
        """
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(0, -int(-self.retry_after // 1)))}


def bad_request(exc: msgspec.ValidationError | msgspec.DecodeError | str) -> ApiError:
    """Translate a decoding failure into the 400 the contract asks for (docs/architecture.md §6: never a 500).

    msgspec's messages name the offending path (``Expected `int`, got `str` - at `$.points` ``), which is
    exactly what a client maker needs, and they never echo the input back. A display text's pattern is
    replaced by the rule in words (``may not contain control characters ... - at `$.title` ``).
    """
    message = str(exc)
    if f"matching regex {DISPLAY_TEXT_PATTERN!r}" in message:
        _, at, where = message.rpartition(" - at ")
        message = f"text {DISPLAY_TEXT_RULE}{at}{where}"
    return ApiError(ErrorCode.BAD_REQUEST, message)
