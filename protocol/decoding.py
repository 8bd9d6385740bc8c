"""JSON decoders for what clients send, whose every failure is a ``msgspec.DecodeError``.

msgspec decodes nested arrays and objects recursively: a document nested deeper than the interpreter's
recursion limit (about a thousand levels, two kilobytes of brackets) raises ``RecursionError``, which
callers did not expect from a decoder — it became a 500 on HTTP and a dropped WebSocket. Here it is a
``DecodeError`` like any other malformed input, so the one translation every caller already makes (400
``bad_request``, an ``error`` frame) covers it too.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, overload

import msgspec

T = TypeVar("T")


class JsonDecoder(Generic[T]):
    """``msgspec.json.Decoder(type)`` for client input (the type cannot be subclassed, hence a wrapper)."""

    __slots__ = ("_decoder",)

    @overload
    def __init__(self: JsonDecoder[T], type: type[T]) -> None: ...
    @overload  # a union of Structs is no ``type``: annotate the variable (``JsonDecoder[Frame]``)
    def __init__(self, type: Any) -> None: ...

    def __init__(self, type: Any) -> None:
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(type)

    def decode(self, buf: bytes | bytearray | str) -> T:
        try:
            return self._decoder.decode(buf)
        except RecursionError:
            raise msgspec.DecodeError("JSON nested too deeply") from None
