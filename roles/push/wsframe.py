"""Server-to-client WebSocket frames (RFC 6455 §5.2), built once and written to many sockets.

The push server never negotiates extensions (no permessage-deflate) and never fragments, so a server frame
is a pure function of its opcode and payload: the same bytes are valid on every connection. That is what
lets the fan-out build a message's frame once and hand it to 10,000 sockets (docs/architecture.md §5). wsproto
stays in charge of everything clients send; these helpers only cover what the server sends.
"""

from __future__ import annotations

import struct

OPCODE_TEXT = 0x1
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9
OPCODE_PONG = 0xA

_FIN = 0x80
#: Payload lengths up to 125 fit in the second header byte; 126 and 127 announce 16- and 64-bit lengths.
_MAX_SHORT = 125
_MAX_16BIT = 0xFFFF

#: Control frames (close, ping, pong) carry at most 125 bytes (RFC 6455 §5.5).
MAX_CONTROL_PAYLOAD = _MAX_SHORT

# Close codes we send (RFC 6455 §7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # draining node, idle client
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY_VIOLATION = 1008  # garbage the protocol parser refused
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN_LATER = 1013  # slow consumer: told to reconnect


def frame(opcode: int, payload: bytes) -> bytes:
    """One complete, unmasked server frame."""
    n = len(payload)
    first = _FIN | opcode
    if n <= _MAX_SHORT:
        header = bytes((first, n))
    elif n <= _MAX_16BIT:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


def text(payload: bytes) -> bytes:
    """A text frame around already-encoded JSON (UTF-8 by construction: msgspec output)."""
    return frame(OPCODE_TEXT, payload)


def ping(payload: bytes = b"") -> bytes:
    return frame(OPCODE_PING, payload[:MAX_CONTROL_PAYLOAD])


def pong(payload: bytes) -> bytes:
    return frame(OPCODE_PONG, payload[:MAX_CONTROL_PAYLOAD])


def close(code: int, reason: str = "") -> bytes:
    # The reason is ours (never client input) but is still cut to fit a control frame.
    body = struct.pack("!H", code) + reason.encode("utf-8")[: MAX_CONTROL_PAYLOAD - 2]
    return frame(OPCODE_CLOSE, body)
