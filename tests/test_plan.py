"""``playtotv plan``: the capacity model's arithmetic on a fixed calibration, and its command line."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from playtotv import cli
from playtotv.plan import FIGURES, MINIMUM, ROLES, PlanError, Show, load_calibration, plan


def fixed() -> dict[str, Any]:
    """Round figures, so the expected counts below can be worked out by hand."""
    values = dict.fromkeys(FIGURES, 1.0) | {
        "push_open_files": 10_100, "push_reserved_files": 100, "push_delivery_p99_us_per_connection": 100.0,
        "push_connects_per_s": 100.0, "push_ws_answers_per_s": 5_000.0, "push_rss_kib_per_connection": 16.0,
        "core_answers_per_s": 1_000.0, "gatekeeper_sessions_per_s": 500.0,
        "worker_aggregate_answers_per_s": 40_000.0, "worker_score_answers_per_s": 4_000.0,
        "redis_ops_per_s_per_shard": 100_000.0, "redis_ops_per_answer": 4, "redis_ops_per_broadcast": 2,
        "redis_ops_per_reveal_answerer": 3, "redis_heartbeat_ops_per_process_per_s": 2,
        "redis_bytes_per_viewer": 1024, "redis_bytes_per_answer": 1024,
        "store_writes_per_reveal_answerer": 1, "store_writes_per_reveal_fixed": 1,
    }
    return {"machine": "test", "figures": {k: {"value": v, "source": "assumed"} for k, v in values.items()}}


def test_a_million_viewers_by_hand():
    result = plan(Show(viewers=1_000_000), fixed())
    roles = {role: r["processes"] for role, r in result["roles"].items()}
    # 60,000 answers/s: 6,000 over REST (÷ 1,000), 54,000 over ws (÷ 5,000 → 11); 10,000 connections per
    # push (files) against 20,000 within the SLO (2 s ÷ 100 µs) → 100; 3,333 sessions/s ÷ 500 → 7;
    # scoring 600,000 in 30 s ÷ 4,000 → 5 against aggregation 60,000 ÷ 40,000 → 2.
    assert roles == {"gatekeeper": 7, "core": 6, "push": 100, "worker": 5, "scheduler": 2}
    assert result["roles"]["push"]["binding"] == "connections"
    assert result["roles"]["worker"]["binding"] == "scoring"
    assert result["show"]["connections_per_push"] == 10_000
    assert result["redis"]["ops_per_s"] == 60_000 * 4 + 5 * 2 + 120 * 2
    assert result["redis"]["shards"] == 3
    assert result["redis"]["ops_per_reveal"] == 1_800_000
    assert result["redis"]["memory_mib"] == round(1_600_000 / 1024, 1)
    assert result["store"]["writes_per_reveal"] == 600_001
    assert result["cores"] == 120 + 3


def test_the_slo_binds_push_when_tighter_than_open_files():
    result = plan(Show(viewers=1_000_000, slo=0.5), fixed())
    assert result["show"]["connections_per_push"] == 5_000
    assert result["roles"]["push"]["processes"] == 200


def test_answers_over_rest_move_the_burst_to_core():
    ws = plan(Show(viewers=1_000_000), fixed())["roles"]
    rest = plan(Show(viewers=1_000_000, answer_path="rest"), fixed())["roles"]
    assert rest["core"]["processes"] == 60 and rest["push"]["needs"]["answers"] == 0
    assert ws["core"]["processes"] == 6


@pytest.mark.parametrize("viewers", [1, 10, 1000])
def test_roles_never_go_below_their_minimum(viewers):
    result = plan(Show(viewers=viewers), fixed())
    for role in ROLES:
        assert result["roles"][role]["processes"] >= MINIMUM[role]
    assert result["roles"]["scheduler"]["processes"] == 2
    assert result["redis"]["shards"] >= 1


def test_every_figure_is_monotone_in_viewers():
    calibration = load_calibration(None)
    previous = None
    for viewers in [1, 50, 999, 10_000, 19_901, 100_000, 333_333, 1_000_000, 5_000_000, 20_000_000]:
        result = plan(Show(viewers=viewers), calibration)
        figures = [result["cores"], result["redis"]["ops_per_s"], result["redis"]["memory_mib"],
                   result["store"]["writes_per_reveal"], *(result["roles"][r]["processes"] for r in ROLES)]
        if previous is not None:
            assert all(a <= b for a, b in zip(previous, figures, strict=True)), (viewers, previous, figures)
        previous = figures
    assert previous[0] > plan(Show(viewers=1_000_000), calibration)["cores"]


def test_the_shipped_calibration_loads_and_says_where_each_figure_comes_from():
    doc = load_calibration(None)
    assert set(FIGURES) <= set(doc["figures"])
    assert {v["source"] for v in doc["figures"].values()} <= {"measured", "RESULTS.md", "assumed"}


@pytest.mark.parametrize("args, needle", [
    (["--viewers", "0"], "--viewers"),
    (["--viewers", "1000", "--answer-share", "1.5"], "--answer-share"),
    (["--viewers", "1000", "--answer-window", "0"], "--answer-window"),
    (["--viewers", "1000", "--slo", "-1"], "--slo"),
    (["--viewers", "1000", "--slo", "nan"], "--slo"),
    (["--viewers", "many"], "--viewers"),
    ([], "--viewers"),
    (["--viewers", "1000", "--answer-path", "pigeon"], "--answer-path"),
])
def test_bad_arguments_exit_2_with_one_line(args, needle, capsys):
    with pytest.raises(SystemExit) as raised:
        code = cli.main(["plan", *args])
        raise SystemExit(code)
    assert raised.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and needle in err, err


@pytest.mark.parametrize("content, needle", [
    ("{not json", "Expecting"),
    ("[]", "figures"),
    (json.dumps({"figures": {}}), "push_open_files"),
])
def test_a_broken_calibration_exits_2_naming_the_file(tmp_path, content, needle, capsys):
    path = tmp_path / "broken.json"
    path.write_text(content)
    assert cli.main(["plan", "--viewers", "1000", "--calibration", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(path) in err and needle in err, err


def test_a_missing_calibration_exits_2_naming_it(tmp_path, capsys):
    path = tmp_path / "absent.json"
    assert cli.main(["plan", "--viewers", "1000", "--calibration", str(path)]) == 2
    assert str(path) in capsys.readouterr().err


def test_a_figure_without_a_known_source_is_refused(tmp_path):
    doc = fixed()
    doc["figures"]["core_answers_per_s"]["source"] = "guessed"
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(PlanError, match="core_answers_per_s"):
        load_calibration(str(path))


def test_json_output_is_the_plan_of_the_given_calibration(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(fixed()))
    assert cli.main(["plan", "--viewers", "1000000", "--calibration", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["cores"] == plan(Show(viewers=1_000_000), fixed())["cores"] == 123


def test_text_output_names_every_role_and_the_total(capsys):
    assert cli.main(["plan", "--viewers", "100000"]) == 0
    out = capsys.readouterr().out
    for word in (*ROLES, "redis", "store", "cores in all"):
        assert word in out


def test_the_cli_keeps_its_other_subcommands():
    sub = next(a for a in cli._parser()._actions if a.dest == "command")
    assert {"serve", "cluster", "schema", "warmup", "plan"} <= set(sub.choices)


def test_calibrate_defaults_cover_every_figure_the_plan_reads():
    from bench.calibrate import BASELINE

    assert set(BASELINE) == set(FIGURES)
    assert plan(Show(viewers=1000), {"figures": copy.deepcopy(BASELINE)})["cores"] >= 7


def test_calibrate_with_every_step_skipped_writes_a_calibration_the_plan_reads(tmp_path, capsys):
    from bench import calibrate

    out = tmp_path / "calibration.json"
    assert calibrate.main(["--out", str(out), "--skip", ",".join(calibrate.STEPS)]) == 0
    doc = load_calibration(str(out))
    assert {v["source"] for v in doc["figures"].values()} <= {"RESULTS.md", "assumed"}
    assert set(doc["steps"].values()) == {"skipped"}
    assert json.loads(capsys.readouterr().out)["benchmark"] == "calibrate"
    assert plan(Show(viewers=1_000_000), doc)["cores"] > 0


def test_calibrate_refuses_an_unknown_step(tmp_path):
    from bench import calibrate

    with pytest.raises(SystemExit) as raised:
        calibrate.main(["--out", str(tmp_path / "c.json"), "--skip", "answers,teleport"])
    assert raised.value.code == 2
