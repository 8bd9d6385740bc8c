"""How busy a node is: the share of the CPU it may use that it did use (a QoS signal, ``cpu_busy``).

Why a CPU signal beside the latency ones: a node's delivery latency stays nearly flat as clients are added
until its CPU is saturated, then leaps (bench overload at 0.1 CPU: push p99 of 100-170 ms from 1,100 to
1,800 clients, 400-3,000 ms a hundred clients later). A tail latency in that flat stretch says little
about how close the cliff is, and one garbage collection moves it more than a hundred clients do; the CPU
used rises steadily with the clients and reaches 1 at the cliff. So the gatekeeper slows growth as this
share nears its limit, as it does for every signal, and the latency signals still guard the promise.

"May use" is the least of:

- one CPU: a node's event loop runs on one thread, so a second core does not make it faster;
- the CPUs its affinity allows (``os.sched_getaffinity``);
- its cgroup's CPU quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, the
  tightest on the way from its own cgroup up to the root: a container's limit or a benchmark's budget).

The cgroup is looked up again at every sample: a process can be moved into one after it starts (bench
overload does that), and a container's limit can be changed while it runs. Anything unreadable counts as
no quota; the sample costs a few small reads of ``/proc`` and ``/sys`` once a second.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable

#: The share is taken over this many seconds of samples: long enough that one busy second (a burst of
#: handshakes) does not read as saturation, short enough to follow growth within a few gatekeeper ticks.
WINDOW_SECONDS = 5.0
CGROUP_ROOT = "/sys/fs/cgroup"


def available_cpus(proc_cgroup: str = "/proc/self/cgroup", root: str = CGROUP_ROOT) -> float:
    """CPUs this process may use: at most one (one event-loop thread), its affinity, its cgroup quota."""
    limit = 1.0
    try:
        limit = min(limit, float(len(os.sched_getaffinity(0))))
    except (AttributeError, OSError):  # not on Linux
        pass
    quota = cgroup_quota(proc_cgroup, root)
    return min(limit, quota) if quota is not None else limit


def cgroup_quota(proc_cgroup: str = "/proc/self/cgroup", root: str = CGROUP_ROOT) -> float | None:
    """The tightest CPU quota (in CPUs) over this process's cgroup and its ancestors; None without one."""
    try:
        with open(proc_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:  # cgroup v2 (unified)
            quotas += _walk(os.path.join(root, "unified") if _is_hybrid(root) else root, path, _v2_quota)
        elif "cpu" in controllers.split(","):  # cgroup v1, the cpu controller's hierarchy
            quotas += _walk(os.path.join(root, controllers), path, _v1_quota)
    return min(quotas) if quotas else None


def _is_hybrid(root: str) -> bool:
    """systemd's hybrid layout mounts v1 controllers at the root and the unified tree beneath it."""
    return not os.path.exists(os.path.join(root, "cgroup.controllers")) and os.path.isdir(
        os.path.join(root, "unified"))


def _walk(mount: str, path: str, read_quota: Callable[[str], float | None]) -> list[float]:
    """Quotas from the process's cgroup up to the mount's root. Inside a container the path the kernel
    names may not exist under the container's mount (its own cgroup is the root there): then only the
    root is read."""
    found = []
    mount = os.path.normpath(mount)
    here = os.path.normpath(os.path.join(mount, path.lstrip("/")))
    if not os.path.isdir(here) or not here.startswith(mount):
        here = mount
    while True:
        quota = read_quota(here)
        if quota is not None:
            found.append(quota)
        if len(here) <= len(mount):
            return found
        here = os.path.dirname(here)


def _v2_quota(directory: str) -> float | None:
    try:
        with open(os.path.join(directory, "cpu.max")) as f:
            quota, _, period = f.read().strip().partition(" ")
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1_quota(directory: str) -> float | None:
    try:
        with open(os.path.join(directory, "cpu.cfs_quota_us")) as f:
            quota = int(f.read().strip())
        with open(os.path.join(directory, "cpu.cfs_period_us")) as f:
            period = int(f.read().strip())
        return None if quota <= 0 else quota / period  # -1: no quota
    except (OSError, ValueError, ZeroDivisionError):
        return None


class CpuBusy:
    """Samples (wall clock, process CPU time, CPUs available); ``share()`` over the last window."""

    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self.window = window
        self._samples: deque[tuple[float, float, float]] = deque()

    def sample(self, now: float | None = None, cpu: float | None = None,
               available: float | None = None) -> float | None:
        """Take a sample (the arguments are for tests) and return the share over the window."""
        now = time.monotonic() if now is None else now
        cpu = time.process_time() if cpu is None else cpu
        available = available_cpus() if available is None else available
        samples = self._samples
        samples.append((now, cpu, available))
        while len(samples) > 2 and samples[1][0] <= now - self.window:
            samples.popleft()
        return self.share()

    def share(self) -> float | None:
        """CPU used ÷ (wall time × CPUs available) since the oldest sample kept; None before two."""
        if len(self._samples) < 2:
            return None
        (t0, cpu0, _), (t1, cpu1, available) = self._samples[0], self._samples[-1]
        if t1 <= t0 or available <= 0:
            return None
        return (cpu1 - cpu0) / ((t1 - t0) * available)
