"""The points a viewer computes from ``interaction.revealed`` (playtotv.points, and its browser port
playtotv-points.js) are the points the workers store: checked over random answer histories (right, wrong,
skipped, late, in any reveal order, at any speed), streaks and speed bonus included."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from playtotv import keys
from playtotv.broker import open_broker
from playtotv.gameplay import director, ids, reveal_scoring, schema
from playtotv.gameplay.documents import AnswerDoc, ScoreDoc, from_docs, to_doc
from playtotv.gameplay.service import Gameplay
from playtotv.points import PointsTracker, Rule, award, top_percent
from playtotv.protocol.push import InteractionRevealed, LeaderboardUpdated, message_data_decoder
from playtotv.protocol.rest import CreateEpisode, CreateShow, InteractionBody, Option
from playtotv.store import open_store

ROOT = Path(__file__).resolve().parent.parent
POINTS_JS = ROOT / "roles" / "core" / "web" / "playtotv-points.js"


class CountingTracker(PointsTracker):
    """Counts the reveals that changed the viewer's score (each must be one stored answer)."""

    applied = 0

    def revealed(self, episode_id: str, data: Any) -> Any:
        scored = super().revealed(episode_id, data)
        self.applied += scored is not None
        return scored


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- a random history ---------------------------------------------------------------------------------------
@dataclass
class Question:
    points: int
    duration: float
    #: Per user: None (skipped), or (right?, seconds after opens_at the answer was received).
    answers: list[tuple[bool, float] | None]
    #: Seconds after opens_at the director closed it (None: at the deadline).
    closed_after: float | None


@dataclass
class History:
    questions: list[Question]
    reveal_order: list[int]
    #: "each": a whole pass after every reveal; "end": one pass at the end (a pass covers several
    #: reveals); "parts": the reveal's part jobs, run in any order, some only after later reveals.
    scoring: str
    seed: int


USERS = 4


@st.composite
def histories(draw: st.DrawFn) -> History:
    count = draw(st.integers(1, 7))
    questions = []
    for _ in range(count):
        duration = draw(st.sampled_from([1.0, 5.0, 10.0, 15.0, 30.0]) | st.floats(0.2, 60.0))
        offset = st.floats(0.0, duration, exclude_max=True) | st.sampled_from([0.0, 0.5, 0.51, duration / 2])
        answer = st.none() | st.tuples(st.booleans(), offset)
        closed_after = draw(st.none() | st.floats(0.1, duration))
        questions.append(Question(draw(st.integers(1, 2000) | st.sampled_from([5, 1000])), duration,
                                  draw(st.lists(answer, min_size=USERS, max_size=USERS)), closed_after))
    order = draw(st.permutations(range(count)))
    return History(questions, list(order), draw(st.sampled_from(["each", "end", "parts"])), draw(st.integers(0, 2**32)))


async def play(history: History) -> tuple[dict[str, ScoreDoc], dict[str, CountingTracker], str, list[Any]]:
    """Runs the history through the director, the store and the worker's scoring pass; meanwhile each
    viewer's tracker sees what its SDK would: the 202's ``received_at`` and the episode's messages."""
    clock = Clock()
    users = [f"u{i}" for i in range(USERS)]
    trackers = {u: CountingTracker() for u in users}
    async with open_broker(None) as broker, open_store("sqlite:///:memory:") as store:
        gameplay = Gameplay(broker, store, clock=clock)
        await gameplay.ensure_schema()
        show = await director.create_show(gameplay, CreateShow(title="S"))
        episode = (await director.create_episode(gameplay, show.id, CreateEpisode(title="E"))).id
        await director.start_episode(gameplay, episode)
        interaction_ids = []
        for q in history.questions:
            body = InteractionBody(kind="quiz", prompt="?", options=[Option(id="a", label="A"),
                                   Option(id="b", label="B")], correct="a", duration=q.duration, points=q.points)
            iid = (await director.create_interaction(gameplay, episode, body)).id
            interaction_ids.append(iid)
            await director.open_interaction(gameplay, iid)
            opens_at = clock.now
            for user, answer in zip(users, q.answers, strict=True):
                if answer is None:
                    continue
                right, after = answer
                received_at = opens_at + after
                choice = "a" if right else "b"
                doc = AnswerDoc(id=ids.answer_id(iid, user), interaction_id=iid, episode_id=episode, user_id=user,
                                choice=choice, received_at=received_at, part=ids.scoring_part(user))
                await store.insert(schema.ANSWERS, to_doc(doc))
                trackers[user].answered(iid, choice, received_at)  # what the 202 said
            if q.closed_after is None:
                clock.now = opens_at + q.duration
                await director.close_due_interactions(gameplay, clock.now)
            else:
                clock.now = opens_at + q.closed_after
                await director.close_interaction(gameplay, iid)
            clock.now += 1.0
        rng = random.Random(history.seed)
        pending: list[int] = []
        for index in history.reveal_order:
            clock.now += 2.0
            await director.reveal_interaction(gameplay, interaction_ids[index])
            if history.scoring == "each":
                assert await reveal_scoring.score_episode(gameplay, episode, "test")
            elif history.scoring == "parts":
                pending += range(ids.SCORING_PARTS)
                rng.shuffle(pending)
                for _ in range(rng.randint(0, len(pending))):
                    assert await reveal_scoring.score_episode(gameplay, episode, "test", part=pending.pop())
        if history.scoring == "parts":
            for part in pending:
                assert await reveal_scoring.score_episode(gameplay, episode, "test", part=part)
        else:
            assert await reveal_scoring.score_episode(gameplay, episode, "test")
        messages = (await broker.history(keys.episode_channel(episode), limit=1000)).messages
        decoded = [message_data_decoder.decode(m.data) for m in messages]
        for data in decoded:
            if isinstance(data, InteractionRevealed):
                raw = msgspec.json.decode(msgspec.json.encode(data))  # as a client receives it
                for tracker in trackers.values():
                    tracker.revealed(f"episode:{episode}", raw)
        stored = {d.user_id: d for d in from_docs(await store.find(schema.SCORES, {"episode_id": episode}), ScoreDoc)}
    return stored, trackers, episode, decoded


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_the_sdk_computes_the_stored_score(history: History) -> None:
    stored, trackers, episode, _ = trio.run(play, history)
    counted = {user: tracker.applied for user, tracker in trackers.items()}
    for user, tracker in trackers.items():
        doc = stored.get(user)
        assert tracker.total(episode) == (doc.score if doc else 0), user
        assert tracker.streak(episode) == (doc.streak if doc else 0), user
        assert (doc.answered if doc else 0) == counted[user], user  # each answer scored once, none lost


def test_a_reveal_sends_no_message_per_viewer_but_the_distribution() -> None:
    history = History([Question(1000, 10.0, [(True, 0.2), (False, 1.0), None, (True, 9.0)], None)], [0], "parts", 1)
    stored, trackers, episode, decoded = trio.run(play, history)
    assert [type(d).__name__ for d in decoded].count("LeaderboardUpdated") == 1
    board = next(d for d in decoded if isinstance(d, LeaderboardUpdated))
    assert board.distribution is not None and board.distribution.players == 3
    assert board.distribution.top[-1] == 100.0 and board.distribution.at_least[-1] == 0  # the wrong one
    assert board.distribution.at_least[0] == 1000  # the best 40 %: one player, the fastest
    spread = msgspec.to_builtins(board.distribution)
    assert board.distribution.top == [40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]  # shares of at least a player
    assert [top_percent(spread, t) for t in (1000, 550, 0)] == [40.0, 70.0, 100.0]  # 1 of 3, 2 of 3, everyone
    revealed = next(d for d in decoded if isinstance(d, InteractionRevealed))
    assert (revealed.points, revealed.duration, revealed.correct) == (1000, 10.0, "a")
    assert revealed.scoring is not None and revealed.scoring.streak_cap == 0.5
    assert trackers["u3"].total(episode) == stored["u3"].score == 550


def test_tracker_ignores_what_is_not_its_score() -> None:
    tracker = PointsTracker()
    tracker.answered("i1", "a", 100.4)
    reveal = {"type": "interaction.revealed", "interaction_id": "i1", "correct": "a", "points": 1000,
              "duration": 10.0, "opens_at": 100.0, "closed_at": 110.0}
    first = tracker.revealed("episode:e", reveal)
    assert first is not None and (first.points, first.total, first.streak) == (1000, 1000, 1)
    assert tracker.revealed("e", reveal) is None  # a repeated reveal message changes nothing
    assert tracker.revealed("e", {**reveal, "interaction_id": "i2"}) is None  # not answered: a skip
    tracker.answered("i3", "a", 100.0)
    assert tracker.revealed("e", {**reveal, "interaction_id": "i3", "points": None, "correct": None}) is None  # poll
    tracker.answered("i4", "a", 110.0)
    assert tracker.revealed("e", {**reveal, "interaction_id": "i4"}) is None  # at closed_at: does not count
    tracker.answered("i5", "a", 100.0)
    second = tracker.revealed("e", {**reveal, "interaction_id": "i5"})
    assert second is not None and (second.points, second.total, second.streak) == (1100, 2100, 2)
    tracker.start("f", total=300, streak=5)
    tracker.answered("i6", "a", 100.0)
    seeded = tracker.revealed("f", {**reveal, "interaction_id": "i6", "scoring": {"streak_cap": 0.2}})
    assert seeded is not None and (seeded.points, seeded.total) == (1200, 1500)


# -- the browser's port ---------------------------------------------------------------------------------------
def _cases(seed: int, count: int) -> list[dict[str, Any]]:
    """Random reveal sequences for one viewer, with the awards and totals the Python tracker computes."""
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        tracker = PointsTracker()
        steps, expected = [], []
        for n in range(rng.randint(1, 8)):
            duration = rng.choice([1.0, 10.0, 15.0, 30.0, rng.uniform(0.2, 60.0)])
            opens_at = 1_700_000_000.0 + n * 100 + rng.random()
            reveal = {"interaction_id": f"i{n}", "correct": "a", "points": rng.choice([5, 1000, rng.randint(1, 3000)]),
                      "duration": duration, "opens_at": opens_at, "closed_at": opens_at + duration * rng.random(),
                      "scoring": rng.choice([None, {"full_points_window": 0.5, "streak_step": 0.1, "streak_cap": 0.5},
                                             {"full_points_window": 1.0, "streak_step": 0.25, "streak_cap": 0.3}])}
            answer = None
            if rng.random() < 0.8:
                answer = [rng.choice("aab"), opens_at + rng.choice([0.0, 0.5, rng.uniform(0, duration * 1.1)])]
                tracker.answered(f"i{n}", answer[0], answer[1])
            got = tracker.revealed("e", reveal)
            steps.append({"reveal": reveal, "answer": answer})
            expected.append(None if got is None else [got.points, got.total, got.streak])
        cases.append({"steps": steps, "expected": expected})
    return cases


def test_round_half_even_cases_are_in_the_python_formula() -> None:
    # Ties that Math.round would round up: the port must round them to even as Python does (the node
    # test below adds these cases).
    assert award(1, 1.0, 1.0, 1) == 0  # 0.5 → 0
    assert award(3, 1.0, 1.0, 1) == 2  # 1.5 → 2
    assert award(5, 1.0, 1.0, 1) == 2  # 2.5 → 2
    assert award(1000, 10.0, 0.9, 1, Rule(full_points_window=1.0)) == 1000


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_browser_port_computes_the_same_points() -> None:
    cases = _cases(seed=21, count=2000)
    cases.extend({"steps": [{"reveal": {"interaction_id": f"t{p}", "correct": "a", "points": p, "duration": 1.0,
                                        "opens_at": 0.0, "closed_at": 2.0}, "answer": ["a", 1.0]}],
                  "expected": [[award(p, 1.0, 1.0, 1), award(p, 1.0, 1.0, 1), 1]]} for p in (1, 3, 5, 7, 9))
    script = """
const src = require("fs").readFileSync(process.argv[1], "utf8");
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
import("data:text/javascript," + encodeURIComponent(src)).then(({ PointsTracker }) => {
  const out = input.map(({ steps }) => {
    const tracker = new PointsTracker();
    return steps.map(({ reveal, answer }) => {
      if (answer) tracker.answered(reveal.interaction_id, answer[0], answer[1]);
      const got = tracker.revealed("episode:e", reveal);
      return got === null ? null : [got.points, got.total, got.streak];
    });
  });
  process.stdout.write(JSON.stringify(out));
});
"""
    done = subprocess.run(["node", "-e", script, str(POINTS_JS)], input=json.dumps(cases), capture_output=True,
                          text=True, timeout=60, check=True)
    got = json.loads(done.stdout)
    mismatches = [(c, g) for c, g in zip(cases, got, strict=True) if g != c["expected"]]
    assert not mismatches, mismatches[:3]
    assert sum(step is not None for c in cases for step in c["expected"]) > 1000  # most steps score


# -- chunked scoring survives a worker killed mid-chunk ---------------------------------------------------------
class Killed(Exception):
    """The worker process died: nothing after this point runs, and it releases no lease."""


class DyingBroker:
    """A broker whose ``release_lease`` does nothing for ``dead`` holders (a killed process never releases)."""

    def __init__(self, broker: Any) -> None:
        self._broker = broker
        self.dead: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)

    async def release_lease(self, name: str, holder: str) -> None:
        if holder not in self.dead:
            await self._broker.release_lease(name, holder)


class DyingStore:
    """A store that kills ``holder`` after its ``after``-th score write (a chunk stored, the next not)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.writes_left: int | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def bulk_upsert(self, collection: str, docs: Any) -> None:
        if collection == schema.SCORES and self.writes_left is not None:
            if self.writes_left == 0:
                raise Killed
            self.writes_left -= 1
        await self._store.bulk_upsert(collection, docs)


async def test_a_part_killed_mid_chunk_is_finished_by_another_worker(autojump_clock, monkeypatch) -> None:
    monkeypatch.setattr(reveal_scoring, "CHUNK", 20)  # several chunks per part with a small audience
    users = [f"v{i}" for i in range(400)]
    rng = random.Random(7)
    async with open_broker(None) as raw_broker, open_store("sqlite:///:memory:") as raw_store:
        broker, store = DyingBroker(raw_broker), DyingStore(raw_store)
        gameplay = Gameplay(broker, store, clock=Clock())  # type: ignore[arg-type]
        await gameplay.ensure_schema()
        show = await director.create_show(gameplay, CreateShow(title="S"))
        episode = (await director.create_episode(gameplay, show.id, CreateEpisode(title="E"))).id
        await director.start_episode(gameplay, episode)
        body = InteractionBody(kind="quiz", prompt="?", options=[Option(id="a", label="A"), Option(id="b", label="B")],
                               correct="a", duration=10.0, points=1000)
        iid = (await director.create_interaction(gameplay, episode, body)).id
        opened = await director.open_interaction(gameplay, iid)
        trackers = {u: PointsTracker() for u in users}
        for user in users:
            choice, received_at = rng.choice("aab"), (opened.opens_at or 0.0) + rng.uniform(0, 9.9)
            await raw_store.insert(schema.ANSWERS, to_doc(AnswerDoc(
                id=ids.answer_id(iid, user), interaction_id=iid, episode_id=episode, user_id=user, choice=choice,
                received_at=received_at, part=ids.scoring_part(user))))
            trackers[user].answered(iid, choice, received_at)
        gameplay.clock.now += 11.0  # type: ignore[attr-defined]
        await director.close_interaction(gameplay, iid)
        await director.reveal_interaction(gameplay, iid)

        victim = max(range(ids.SCORING_PARTS), key=lambda p: sum(ids.scoring_part(u) == p for u in users))
        assert sum(ids.scoring_part(u) == victim for u in users) > 2 * reveal_scoring.CHUNK
        broker.dead.add("dead")
        store.writes_left = 1
        with pytest.raises(Killed):
            await reveal_scoring.score_episode(gameplay, episode, "dead", part=victim)
        store.writes_left = None
        # The job is redelivered to another worker, which waits out the dead one's lease; the other parts
        # go on meanwhile, in any order.
        # (No fail_after: the clock jumps while the store's thread works.) The dead lease expires within a
        # few LEASE_WAITs of mock time.
        for part in [p for p in range(ids.SCORING_PARTS) if p != victim] + [victim]:
            attempts = 1
            while not await reveal_scoring.score_episode(gameplay, episode, "alive", part=part):
                attempts += 1
                assert attempts * reveal_scoring.LEASE_WAIT < 3 * reveal_scoring.SCORING_LEASE_TTL
        scored = {d.user_id: d for d in from_docs(await raw_store.find(schema.SCORES, {"episode_id": episode}),
                                                  ScoreDoc)}
        history = await raw_broker.history(keys.episode_channel(episode))
        revealed = next(msgspec.json.decode(m.data) for m in history.messages
                        if b'"interaction.revealed"' in m.data)
        for user, tracker in trackers.items():
            mine = tracker.revealed(episode, revealed)
            assert mine is not None and scored[user].score == mine.total and scored[user].answered == 1, user
        assert (await gameplay.interaction(iid, fresh=True)).scored_at is not None  # type: ignore[union-attr]
        assert sum(b'"leaderboard.updated"' in m.data for m in history.messages) == 1
