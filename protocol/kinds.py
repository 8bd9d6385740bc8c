"""Interaction kinds as data: one :class:`KindSpec` per kind in :data:`KINDS`, the only place a kind is
declared.

Everything that differs between kinds is a field of its spec: what a choice is (an option id or an
integer on a scale), when the correct option is known (at creation, at reveal, never), whether it scores,
and whether results carry an average. The rules below read those fields, never a kind's name, so the
server (interaction creation, answers, reveal, results, scoring) and the web pages (which read
``GET /v1/kinds``) all follow the table. Adding a kind is one entry here plus its tests.

Pure: no I/O and no imports of the REST bodies (:mod:`.rest` imports this module).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import msgspec

from .errors import ApiError, ErrorCode

#: Options an interaction may have (choice kinds take 2 to this many).
MAX_OPTIONS = 10
#: A rating scale wider than this is not a rating; the bound also bounds per-value counters.
MAX_SCALE_VALUES = 101


class KindSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How one kind of interaction behaves; served as is at ``GET /v1/kinds``."""

    name: str
    #: ``options``: the director gives 2 to ``max_options`` options and a choice is an option id;
    #: ``scale``: the director gives ``scale: [low, high]`` and a choice is an integer in it.
    choices: Literal["options", "scale"]
    #: When the correct option is known. ``creation``: required in the interaction body, may be
    #: overridden at reveal; ``reveal``: refused in the body, required at reveal; ``never``: refused both.
    correct: Literal["creation", "reveal", "never"]
    #: Scored kinds take ``points`` and earn them for a correct answer. While one is open, a caller who has
    #: not answered it does not see friends' choices (they could be copied).
    scored: bool
    #: Results carry ``average``, the mean of the chosen values (scale kinds only).
    average: bool = False
    #: One line for people (the console shows it).
    description: str = ""

    # -- rules, read from the fields above ----------------------------------------------------------------

    def check_definition(self, option_ids: Sequence[str], scale: tuple[int, int] | None,
                         correct: str | None) -> None:
        """The cross-field rules of an interaction body of this kind; 400 ``bad_request`` naming the rule."""
        if self.choices == "scale":
            if option_ids:
                raise ApiError(ErrorCode.BAD_REQUEST, f"a {self.name} takes a scale, not options")
            if scale is None:
                raise ApiError(ErrorCode.BAD_REQUEST, f"a {self.name} needs a scale [low, high]")
            low, high = scale
            if not low < high or high - low + 1 > MAX_SCALE_VALUES:
                raise ApiError(
                    ErrorCode.BAD_REQUEST,
                    f"scale must be [low, high] with low < high and at most {MAX_SCALE_VALUES} values",
                )
        else:
            if scale is not None:
                raise ApiError(ErrorCode.BAD_REQUEST, f"a {self.name} takes options, not a scale")
            if len(option_ids) < 2:
                raise ApiError(ErrorCode.BAD_REQUEST, f"a {self.name} needs 2 to {MAX_OPTIONS} options")
            if len(set(option_ids)) != len(option_ids):
                raise ApiError(ErrorCode.BAD_REQUEST, "option ids must be unique")
        if self.correct == "creation":
            if correct is None:
                raise ApiError(ErrorCode.BAD_REQUEST, f"a {self.name} needs its correct option id")
            if correct not in option_ids:
                raise ApiError(ErrorCode.BAD_REQUEST, "correct must be one of the option ids")
        elif correct is not None:
            # A prediction's answer is given at reveal; for kinds that are never correct it means nothing.
            when = "given at reveal" if self.correct == "reveal" else "not part of"
            raise ApiError(ErrorCode.BAD_REQUEST, f"correct is {when} a {self.name}")

    def choice_keys(self, option_ids: Sequence[str], scale: tuple[int, int] | None) -> list[str]:
        """Every possible answer as the string that keys result counts (option ids, or scale values)."""
        if self.choices == "scale":
            low, high = scale or (0, -1)
            return [str(value) for value in range(low, high + 1)]
        return list(option_ids)

    def check_choice(self, option_ids: Sequence[str], scale: tuple[int, int] | None, choice: str | int) -> None:
        """422 ``invalid_choice`` unless ``choice`` is an answer to such an interaction."""
        if self.choices == "scale":
            low, high = scale or (0, -1)
            # bool is an int in Python, but `true` is no rating.
            if isinstance(choice, bool) or not isinstance(choice, int) or not low <= choice <= high:
                raise ApiError(ErrorCode.INVALID_CHOICE, f"choice must be an integer from {low} to {high}")
        elif not isinstance(choice, str) or choice not in option_ids:
            raise ApiError(ErrorCode.INVALID_CHOICE, "choice must be one of the option ids")

    def correct_at_reveal(self, option_ids: Sequence[str], stored: str | None, given: str | None) -> str | None:
        """The correct option once revealed: ``given`` (the reveal body's ``correct``) or the stored one."""
        if self.correct == "never":
            if given is not None:
                raise ApiError(ErrorCode.BAD_REQUEST, f"a {self.name} has no correct answer")
            return None
        if given is None:
            if self.correct == "reveal":
                raise ApiError(ErrorCode.BAD_REQUEST, f"a {self.name} needs the correct option id at reveal")
            return stored
        if given not in option_ids:
            raise ApiError(ErrorCode.INVALID_CHOICE, "correct must be one of the option ids")
        return given


KINDS: tuple[KindSpec, ...] = (
    KindSpec(name="quiz", choices="options", correct="creation", scored=True,
             description="a question with one correct option; fast correct answers earn points"),
    KindSpec(name="poll", choices="options", correct="never", scored=False,
             description="what viewers think; no correct option"),
    KindSpec(name="vote", choices="options", correct="never", scored=False,
             description="viewers pick one option; no correct option"),
    KindSpec(name="prediction", choices="options", correct="reveal", scored=True,
             description="an outcome not known yet; the director gives it at reveal and correct answers score"),
    KindSpec(name="rating", choices="scale", correct="never", scored=False, average=True,
             description="a number on a scale; results carry the average"),
)

#: Kind names in table order (the ``kind`` field's enum).
KIND_NAMES: tuple[str, ...] = tuple(spec.name for spec in KINDS)
BY_NAME: dict[str, KindSpec] = {spec.name: spec for spec in KINDS}
#: Kinds that score and therefore take ``points``.
SCORED_KINDS = frozenset(spec.name for spec in KINDS if spec.scored)


def spec(kind: str) -> KindSpec:
    """The spec of a kind; ``KeyError`` for a name not in the table (request bodies are decoded against
    :data:`KIND_NAMES`, so only stored data from a removed kind could get here)."""
    return BY_NAME[kind]


class KindList(msgspec.Struct, kw_only=True):
    """``GET /v1/kinds``: every kind the server accepts, with the limits of interaction bodies."""

    kinds: list[KindSpec]
    max_options: int = MAX_OPTIONS
    max_scale_values: int = MAX_SCALE_VALUES


def kind_list() -> KindList:
    return KindList(kinds=list(KINDS))
