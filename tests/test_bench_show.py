"""``python -m bench show`` at CI size: the whole show runs and its totals are exact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_a_small_show_delivers_everything_and_counts_every_answer_once() -> None:
    run = subprocess.run([sys.executable, "-m", "bench", "show", "--viewers", "200", "--answer-window", "2",
                          "--plot", ""], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["answers_accepted"] == 120  # 60 % of 200
    assert result["results_total"] == 120
    assert result["points_received"] == 200  # every viewer computes its points from the reveal
    assert result["totals_exact"] and result["all_delivered"]
    assert result["errors"] == {"join": {}, "answers": {}, "connect_failed": 0, "closed": 0, "gaps": 0}
    assert set(result["cpu_ms_per_viewer"]) >= {"core", "push", "gatekeeper", "worker", "redis"}
