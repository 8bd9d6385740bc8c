"""The wire protocol of PlayToTV as msgspec types: shared by servers, the client SDK and outside tools.

No I/O here and no imports of other ``playtotv`` modules (dependency direction: protocol ← playtotv ←
roles), so a client can depend on this package alone.

* :mod:`.errors` — the error body, its codes and statuses, :class:`~.errors.ApiError`.
* :mod:`.text` — :data:`~.text.DisplayText`, the rule for titles, labels and names.
* :mod:`.kinds` — the table of interaction kinds (quiz, poll, ...) and the rules that read it.
* :mod:`.rest` — every REST request and response body, request decoders, cross-field checks.
* :mod:`.push` — WebSocket frames, the long-poll response, message data types, frame encoders.
* :mod:`.decoding` — the JSON decoder wrapper whose every failure is a ``msgspec.DecodeError``.
* :mod:`.schema` — the JSON Schema of the push protocol and the OpenAPI document of the REST API.
"""

from . import errors, kinds, push, rest, text
from .errors import ApiError, ErrorCode

__all__ = ["ApiError", "ErrorCode", "errors", "kinds", "push", "rest", "text"]
