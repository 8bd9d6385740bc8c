"""A hard CPU budget for one process: a cgroup with a CFS bandwidth quota (``bench overload``).

Why a cgroup rather than a busy loop competing for the process's core: the quota is what the kernel
enforces, in CPU time, whatever else the shared machine runs (a competitor's share would move with the
neighbours' load), it costs nothing while the process idles (a burner would take a core from everyone
for the whole run), and the kernel counts how often it bit (``throttled``), so the run can show that the
budget, not something else, was the limit. The period is short so a throttled process waits milliseconds,
not the default 100 ms: latencies then grow with the work per message, not with the throttle's step.

Needs root and a writable cpu controller (cgroup v1 ``/sys/fs/cgroup/cpu`` or v2 with ``cpu`` in the
root's ``cgroup.subtree_control``); :func:`open_budget` raises ``BudgetUnavailable`` otherwise.
"""

from __future__ import annotations

import itertools
import os
import sys
from contextlib import contextmanager
from typing import Iterator

#: CFS period: 10 ms, so a throttled process is held at most ~10 ms at a time.
PERIOD_US = 10_000
_V1_ROOT = "/sys/fs/cgroup/cpu"
_V2_ROOT = "/sys/fs/cgroup"


class BudgetUnavailable(RuntimeError):
    pass


_serial = itertools.count()  # several budgets in one run (``bench overload``'s twin node) need names of their own


class CpuBudget:
    """``cpus`` of CPU time per wall second for the processes :meth:`add`-ed."""

    def __init__(self, path: str, version: int, cpus: float) -> None:
        self.path = path
        self.version = version
        self.cpus = cpus
        #: The core the budgeted processes run on alone (see :meth:`own_core`), or None: any core.
        self.core: int | None = None

    def own_core(self) -> int | None:
        """Keep one core for the budgeted processes: this process (and so every process it starts from
        now on) moves to the other cores, and :meth:`add` pins the budgeted ones to that core. The quota
        bounds how much CPU the node gets; this keeps its neighbours' load (load generator, gatekeeper,
        Redis) out of *when* it gets it, so its latencies depend on its own work. None (nothing changed)
        on a machine with a single core."""
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            return None
        self.core = cores[-1]
        os.sched_setaffinity(0, set(cores[:-1]))
        return self.core

    def add(self, pid: int) -> None:
        """Move every thread of ``pid`` under the budget (and onto its own core, if one is kept)."""
        _write(os.path.join(self.path, "cgroup.procs"), str(pid))
        if self.core is not None:
            for thread in os.listdir(f"/proc/{pid}/task"):
                os.sched_setaffinity(int(thread), {self.core})

    def stats(self) -> dict[str, float]:
        """How often the budget bit: CFS periods, periods throttled, total time held (seconds)."""
        values: dict[str, int] = {}
        with open(os.path.join(self.path, "cpu.stat")) as f:
            for line in f:
                name, _, value = line.partition(" ")
                values[name] = int(value)
        held = values.get("throttled_time", 0) / 1e9 if self.version == 1 else values.get("throttled_usec", 0) / 1e6
        return {"periods": values.get("nr_periods", 0), "throttled": values.get("nr_throttled", 0),
                "throttled_s": round(held, 2)}


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _create(cpus: float) -> CpuBudget:
    quota = max(1000, int(cpus * PERIOD_US))  # the kernel's minimum quota is 1 ms
    name = f"playtotv-bench-{os.getpid()}-{next(_serial)}"
    if os.path.exists(os.path.join(_V1_ROOT, "cpu.cfs_quota_us")):
        path = os.path.join(_V1_ROOT, name)
        os.mkdir(path)
        _write(os.path.join(path, "cpu.cfs_period_us"), str(PERIOD_US))
        _write(os.path.join(path, "cpu.cfs_quota_us"), str(quota))
        return CpuBudget(path, 1, quota / PERIOD_US)
    controllers = os.path.join(_V2_ROOT, "cgroup.subtree_control")
    if os.path.exists(controllers):
        with open(controllers) as f:
            if "cpu" not in f.read().split():
                _write(controllers, "+cpu")
        path = os.path.join(_V2_ROOT, name)
        os.mkdir(path)
        _write(os.path.join(path, "cpu.max"), f"{quota} {PERIOD_US}")
        return CpuBudget(path, 2, quota / PERIOD_US)
    raise BudgetUnavailable("no cgroup cpu controller found")


def _remove(budget: CpuBudget) -> None:
    """Move any process still inside back to the root group (normally none: the bench stops its nodes
    first), then delete the group."""
    parent = _V1_ROOT if budget.version == 1 else _V2_ROOT
    with open(os.path.join(budget.path, "cgroup.procs")) as f:
        pids = [line.strip() for line in f if line.strip()]
    for pid in pids:
        try:
            _write(os.path.join(parent, "cgroup.procs"), pid)
        except ProcessLookupError:
            continue  # it exited meanwhile
    try:
        os.rmdir(budget.path)
    except OSError as e:
        print(f"bench: could not remove {budget.path} ({e.strerror}); remove it by hand", file=sys.stderr)


@contextmanager
def open_budget(cpus: float, core: int | None = None) -> Iterator[CpuBudget]:
    """A fresh cgroup holding ``cpus`` CPUs; removed on exit. Raises ``BudgetUnavailable`` with the reason.
    ``core``: pin what is added to this core (another budget's :meth:`CpuBudget.own_core`), so two
    budgeted processes share one core kept for them, each within its own quota."""
    try:
        budget = _create(cpus)
    except OSError as e:
        raise BudgetUnavailable(f"cannot create a cpu cgroup ({e.strerror or e}); run as root") from None
    budget.core = core
    try:
        yield budget
    finally:
        _remove(budget)
