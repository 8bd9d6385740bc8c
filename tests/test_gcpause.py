"""Garbage-collection pauses show on /metrics and slow ones in the log (playtotv.gcpause)."""

from __future__ import annotations

import gc
import logging


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
    assert fields["generation"] == 2
    assert fields["wall_ms"] >= 0 and fields["cpu_ms"] >= 0 and fields["collected"] >= 0


def test_a_fast_collection_is_not_logged(caplog):
    caplog.set_level(logging.WARNING, logger="playtotv.gc")
    with PauseTimer(Metrics().gc_pause, slow_after=10.0):
        gc.collect(0)
    assert not [r for r in caplog.records if r.name == "playtotv.gc"]
