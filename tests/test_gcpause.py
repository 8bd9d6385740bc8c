"""Garbage-collection pauses show on /metrics and slow ones in the log (playtotv.gcpause)."""

from __future__ import annotations

import gc
import logging

import pytest

from playtotv import gcpause
from playtotv.gcpause import PauseTimer
from playtotv.metrics import Metrics


def _count(metrics: Metrics, generation: str) -> float:
    value = metrics.registry.get_sample_value("playtotv_gc_pause_seconds_count", {"generation": generation})
    return value or 0.0


def test_every_collection_is_timed_by_generation_and_the_timer_leaves_no_callback():
    metrics = Metrics()
    before = list(gc.callbacks)
    with PauseTimer(metrics.gc_pause, slow_after=10.0):
        gc.collect(0)
        gc.collect(2)
    assert _count(metrics, "0") >= 1
    assert _count(metrics, "2") >= 1
    assert gc.callbacks == before
    gc.collect(2)  # after the timer is gone: not counted
    assert _count(metrics, "2") == 1


def test_a_slow_collection_is_logged_with_its_wall_and_cpu_time(caplog):
    metrics = Metrics()
    caplog.set_level(logging.WARNING, logger="playtotv.gc")
    with PauseTimer(metrics.gc_pause, slow_after=0.0):
        gc.collect(2)
    records = [r for r in caplog.records if r.name == "playtotv.gc"]
    assert records and records[0].levelno == logging.WARNING
    fields = records[0].fields
    assert fields["generation"] == 2 and isinstance(fields["collected"], int)


def test_the_log_line_carries_the_pause_wall_and_cpu_time(caplog, monkeypatch):
    # Clocks under the test's control: 120 ms of wall time of which 80 ms on this thread's CPU.
    clocks = iter([(10.0, 1.0), (10.12, 1.08)])
    now = {}

    def tick() -> None:
        now["wall"], now["cpu"] = next(clocks)

    monkeypatch.setattr(gcpause.time, "perf_counter", lambda: now["wall"])
    monkeypatch.setattr(gcpause.time, "thread_time", lambda: now["cpu"])
    metrics = Metrics()
    caplog.set_level(logging.WARNING, logger="playtotv.gc")
    timer = PauseTimer(metrics.gc_pause, slow_after=0.1)
    tick()
    timer._callback("start", {"generation": 1})
    tick()
    timer._callback("stop", {"generation": 1, "collected": 7})
    [record] = [r for r in caplog.records if r.name == "playtotv.gc"]
    assert record.fields == {"generation": 1, "wall_ms": 120.0, "cpu_ms": 80.0, "collected": 7}
    assert metrics.registry.get_sample_value("playtotv_gc_pause_seconds_sum", {"generation": "1"}) == \
        pytest.approx(0.12)


def test_a_fast_collection_is_not_logged(caplog):
    caplog.set_level(logging.WARNING, logger="playtotv.gc")
    with PauseTimer(Metrics().gc_pause, slow_after=10.0):
        gc.collect(0)
    assert not [r for r in caplog.records if r.name == "playtotv.gc"]
