"""How many CPU cores this process may use: the default number of worker processes."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Cores in this process's CPU affinity, capped by a cgroup v2 CPU quota when one is set.

    A container sees every core of its node; without the quota's cap a pod limited to one
    CPU on a 64-core node would start 64 workers and be throttled (and use 64 times the
    memory) for nothing."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota readable: the affinity decides
    return max(1, cores)
