"""Interaction kinds are data (protocol/kinds.py): every rule reads the table, every set of kinds the
server and the pages know derives from it, and no code outside the table names a kind.

The rules and the round trip below are parametrized over the table, so a new kind is one entry in
``KINDS`` and these tests cover it as they are; only behaviour a new field adds needs a new test.
"""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

import msgspec
import pytest

from playtotv.protocol import contract, kinds, rest
from playtotv.protocol.errors import ApiError, ErrorCode
from playtotv.protocol.kinds import KINDS, KindSpec
from tests.playkit import running

ROOT = Path(__file__).resolve().parents[1]
#: Where the server and the pages live: none of it may name a kind but the table.
SOURCES = [ROOT / "protocol", ROOT / "playtotv", ROOT / "roles"]
TABLE = ROOT / "protocol" / "kinds.py"
#: Code that plays a client (it builds a quiz, as any client of the API would), not the server's rules.
CLIENTS = {ROOT / "playtotv" / "devtools" / "audience.py"}
OPTIONS = [{"id": "a", "label": "A"}, {"id": "b", "label": "B"}, {"id": "c", "label": "C"}]


def body_of(spec: KindSpec) -> dict:
    """A valid interaction body of a kind, built from its spec alone."""
    body: dict = {"kind": spec.name, "prompt": f"A {spec.name}?", "duration": 30, "points": 500}
    if spec.choices == "scale":
        body["scale"] = [1, 5]
    else:
        body["options"] = OPTIONS
    if spec.correct == "creation":
        body["correct"] = "b"
    return body


def a_choice(spec: KindSpec) -> str | int:
    return 4 if spec.choices == "scale" else "b"


# -- the table ---------------------------------------------------------------------------------------------

def test_the_table_is_well_formed():
    names = [spec.name for spec in KINDS]
    assert len(names) == len(set(names)) and all(re.fullmatch(r"[a-z_]+", n) for n in names)
    for spec in KINDS:
        # A kind scored by correctness must be able to learn its answer; an average needs numbers.
        assert not spec.scored or spec.correct != "never", spec.name
        assert not spec.average or spec.choices == "scale", spec.name
        assert spec.description


def test_every_set_of_kinds_derives_from_the_table():
    names = {spec.name for spec in KINDS}
    assert set(typing.get_args(rest.Kind)) == names  # what request bodies may say
    assert set(kinds.KIND_NAMES) == names and set(kinds.BY_NAME) == names
    assert kinds.SCORED_KINDS == {spec.name for spec in KINDS if spec.scored} == rest.SCORED_KINDS
    document = contract.openapi_document()
    components = document["components"]["schemas"]
    for struct in ("InteractionBody", "InteractionView", "InteractionStats"):
        assert set(components[struct]["properties"]["kind"]["enum"]) == names, struct
    listed = msgspec.json.decode(msgspec.json.encode(kinds.kind_list()))
    assert [k["name"] for k in listed["kinds"]] == list(kinds.KIND_NAMES)
    route = document["paths"]["/v1/kinds"]["get"]
    assert route["security"] == [] and "KindList" in str(route["responses"]["200"])


def _python_naming_a_kind(path: Path) -> list[int]:
    names = set(kinds.KIND_NAMES)
    tree = ast.parse(path.read_text())
    # protocol/contract.py's route table has an operation called "poll" (long polling): not the kind.
    routes = {id(arg) for node in ast.walk(tree) if isinstance(node, ast.Call)
              and isinstance(node.func, ast.Name) and node.func.id == "Route" for arg in node.args}
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in routes]


def test_no_code_outside_the_table_names_a_kind():
    """Counts the files a new kind would touch: the table, nothing else (the pages included)."""
    naming: dict[str, list[int]] = {}
    for source in SOURCES:
        for path in source.rglob("*.py"):
            if path == TABLE or path in CLIENTS:
                continue
            if lines := _python_naming_a_kind(path):
                naming[str(path.relative_to(ROOT))] = lines
    alternatives = "|".join(kinds.KIND_NAMES)
    quoted = re.compile(rf"""["'`]({alternatives})["'`]""")
    for path in (ROOT / "roles" / "core" / "web").glob("*.js"):
        if lines := [i for i, line in enumerate(path.read_text().splitlines(), 1) if quoted.search(line)]:
            naming[str(path.relative_to(ROOT))] = lines
    assert naming == {}
    assert _python_naming_a_kind(TABLE)  # the table itself does (the check can see a name)


# -- the rules, for every kind -------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", KINDS, ids=lambda s: s.name)
def test_definition_rules_follow_the_spec(spec: KindSpec):
    body = rest.interaction_body_decoder.decode(msgspec.json.encode(body_of(spec)))
    rest.check_interaction(body)
    wrong = [{**body_of(spec), "correct": None if spec.correct == "creation" else "a"}]
    if spec.choices == "scale":
        wrong += [{**body_of(spec), "options": OPTIONS}, {**body_of(spec), "scale": None},
                  {**body_of(spec), "scale": [5, 5]}, {**body_of(spec), "scale": [0, kinds.MAX_SCALE_VALUES]}]
    else:
        wrong += [{**body_of(spec), "scale": [1, 5]}, {**body_of(spec), "options": OPTIONS[:1]},
                  {**body_of(spec), "options": [OPTIONS[0], OPTIONS[0]]}]
    if spec.correct == "creation":
        wrong.append({**body_of(spec), "correct": "z"})
    for bad in wrong:
        with pytest.raises(ApiError) as info:
            rest.check_interaction(rest.interaction_body_decoder.decode(msgspec.json.encode(bad)))
        assert info.value.code is ErrorCode.BAD_REQUEST, bad


@pytest.mark.parametrize("spec", KINDS, ids=lambda s: s.name)
def test_choice_and_reveal_rules_follow_the_spec(spec: KindSpec):
    ids, scale = ["a", "b"], (1, 5)
    spec.check_choice(ids, scale, a_choice(spec))
    bad = [6, 0, "3", True] if spec.choices == "scale" else ["z", 1, True]
    for choice in bad:
        with pytest.raises(ApiError) as info:
            spec.check_choice(ids, scale, choice)
        assert info.value.code is ErrorCode.INVALID_CHOICE
    keys = spec.choice_keys(ids, scale)
    assert keys == (["1", "2", "3", "4", "5"] if spec.choices == "scale" else ids)
    if spec.correct == "never":
        assert spec.correct_at_reveal(ids, None, None) is None
        with pytest.raises(ApiError):
            spec.correct_at_reveal(ids, None, "a")
        return
    assert spec.correct_at_reveal(ids, "a", "b") == "b"
    with pytest.raises(ApiError) as info:
        spec.correct_at_reveal(ids, "a", "z")
    assert info.value.code is ErrorCode.INVALID_CHOICE
    if spec.correct == "reveal":
        with pytest.raises(ApiError):
            spec.correct_at_reveal(ids, None, None)
    else:
        assert spec.correct_at_reveal(ids, "a", None) == "a"


# -- the server, for every kind ------------------------------------------------------------------------------

@pytest.mark.slow  # a real HTTP listener
async def test_every_kind_round_trips_through_core():
    """``GET /v1/kinds`` is the table; each kind is created, answered, revealed and counted as its spec says."""
    async with running(None) as play:
        listed = await play.http.get("/v1/kinds")  # public: no credentials
        assert listed.status_code == 200
        assert listed.json() == msgspec.to_builtins(kinds.kind_list())
        episode_id = await play.live_episode()
        for spec in KINDS:
            interaction_id = await play.interaction(episode_id, body_of(spec))
            viewer = play.viewer(f"u_{spec.name}")
            answer = await play.http.post(f"/v1/interactions/{interaction_id}/answers",
                                          json={"choice": a_choice(spec)}, headers=viewer)
            assert answer.status_code == 202, answer.text
            wrong = await play.http.post(f"/v1/interactions/{interaction_id}/answers",
                                         json={"choice": "z" if spec.choices == "scale" else 99}, headers=viewer)
            assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "invalid_choice"
            await play.post(f"/v1/interactions/{interaction_id}/close")
            reveal = {"correct": "b"} if spec.correct == "reveal" else {}
            revealed = await play.post(f"/v1/interactions/{interaction_id}/reveal", reveal)
            assert revealed["status"] == "revealed"
            assert (revealed.get("points") is not None) == spec.scored
            await play.drained()
            results = (await play.http.get(f"/v1/interactions/{interaction_id}/results", headers=viewer)).json()
            assert results["total"] == 1 and results["counts"][str(a_choice(spec))] == 1
            assert ("average" in results) == spec.average
            assert results["correct"] == ("b" if spec.correct != "never" else None)
