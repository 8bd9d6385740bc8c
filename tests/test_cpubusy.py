"""The ``cpu_busy`` QoS signal: CPUs a node may use (cgroup quotas of both versions, one event loop), and
the share of them it used over a window."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from playtotv import cpubusy
from playtotv.cpubusy import CpuBusy, available_cpus, cgroup_quota


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_v2_quota_is_the_tightest_from_the_process_cgroup_up(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpu memory")
    write(root / "cpu.max", "max 100000")  # the root is never limited
    write(root / "pods" / "cpu.max", "150000 100000")  # 1.5 CPUs for the pod
    write(root / "pods" / "node" / "cpu.max", "max 100000")
    write(tmp_path / "self", "0::/pods/node\n")
    assert cgroup_quota(str(tmp_path / "self"), str(root)) == 1.5
    write(root / "pods" / "node" / "cpu.max", "25000 100000")
    assert cgroup_quota(str(tmp_path / "self"), str(root)) == 0.25
    assert available_cpus(str(tmp_path / "self"), str(root)) == 0.25


def test_v1_quota_in_a_hybrid_layout_and_minus_one_means_none(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    (root / "unified").mkdir(parents=True)  # systemd's hybrid layout: v1 controllers, unified beneath
    write(root / "cpu" / "cpu.cfs_quota_us", "-1")
    write(root / "cpu" / "cpu.cfs_period_us", "100000")
    write(tmp_path / "self", "2:cpuacct:/\n1:cpu:/bench\n0::/\n")
    assert cgroup_quota(str(tmp_path / "self"), str(root)) is None  # /bench does not exist: root only
    write(root / "cpu" / "bench" / "cpu.cfs_quota_us", "1000")
    write(root / "cpu" / "bench" / "cpu.cfs_period_us", "10000")
    assert cgroup_quota(str(tmp_path / "self"), str(root)) == 0.1


def test_no_cgroup_means_one_cpu_at_most(tmp_path: Path) -> None:
    # One event loop uses one core however many the machine has; an unreadable cgroup is no quota.
    assert cgroup_quota(str(tmp_path / "missing"), str(tmp_path)) is None
    write(tmp_path / "self", "garbage\n0::/x\n")
    assert available_cpus(str(tmp_path / "self"), str(tmp_path)) == min(1.0, len(os.sched_getaffinity(0)))


def test_share_is_cpu_used_over_wall_time_and_cpus_available_within_the_window() -> None:
    busy = CpuBusy(window=5.0)
    assert busy.sample(now=0.0, cpu=0.0, available=0.5) is None  # one sample says nothing yet
    assert busy.sample(now=1.0, cpu=0.25, available=0.5) == pytest.approx(0.5)
    for t in range(2, 11):  # idle from here on
        share = busy.sample(now=float(t), cpu=0.25, available=0.5)
    assert share == 0.0  # the busy second has left the 5-s window
    assert busy.sample(now=11.0, cpu=0.75, available=0.5) == pytest.approx(0.5 / (5.0 * 0.5))


def test_a_sample_without_arguments_reads_the_monotonic_clock_process_cpu_and_cpus_available(monkeypatch) -> None:
    readings = iter([(100.0, 3.0), (102.0, 3.4)])  # 0.4 s of CPU over 2 s of wall time
    now = {}

    def tick() -> None:
        now["wall"], now["cpu"] = next(readings)

    monkeypatch.setattr(cpubusy.time, "monotonic", lambda: now["wall"])
    monkeypatch.setattr(cpubusy.time, "process_time", lambda: now["cpu"])
    monkeypatch.setattr(cpubusy, "available_cpus", lambda: 0.5)
    busy = CpuBusy()
    tick()
    assert busy.sample() is None
    tick()
    assert busy.sample() == pytest.approx(0.4 / (2.0 * 0.5))
