"""Text that people read: titles, prompts, option labels, display names.

A display text is shown to other people (on TV, on phones, on leaderboards), so it may not hold characters
that hide or disguise what it says: control characters (NUL, newline, escape, the C1 range) and the
bidirectional embeddings, overrides and isolates that reorder what follows them on screen (U+202E makes
"gpj.exe" read as "exe.jpg"), nor the Unicode line and paragraph separators. Ordinary letters of any script,
emoji (joiners included) and the left-to-right / right-to-left marks (U+200E, U+200F) are fine.

The rule is one msgspec pattern, so it is checked while decoding (a 400, nothing stored) and appears as-is
in the published OpenAPI document. Each use adds its own length with a second ``Meta``.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

#: The characters a display text may not hold (see the module docstring).
FORBIDDEN_DISPLAY_CHARS = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"

#: ``$(?!\n)``: the end of the text. Python's ``$`` also matches just before a final newline; the
#: lookahead refuses that, and means nothing to an ECMAScript validator (whose ``$`` is the end already).
DISPLAY_TEXT_PATTERN = rf"^[^{FORBIDDEN_DISPLAY_CHARS}]*$(?!\n)"

#: Say what is wrong in words instead of echoing the pattern in the error message.
DISPLAY_TEXT_RULE = "may not contain control characters or bidirectional overrides"

DisplayText = Annotated[str, Meta(pattern=DISPLAY_TEXT_PATTERN)]
"""A string without the forbidden characters; add the length per use:
``Annotated[DisplayText, Meta(min_length=1, max_length=64)]``."""
