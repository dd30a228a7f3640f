"""How many CPUs this process may use: the default worker count of `livefeat serve`.

The smallest of the CPUs the scheduler lets it run on (sched_getaffinity) and
its cgroup's CPU quota (v2 `cpu.max`, or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`),
rounded up, at least 1: a pod with a CPU limit of 4 (or 3.5) gets 4.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def cgroup_quota(root: Path = CGROUP) -> float | None:
    """The cgroup's CPU quota in CPUs (e.g. 2.5), or None if unlimited or unknown."""
    v2 = root / "cpu.max"
    if v2.exists():
        quota, _, period = v2.read_text().strip().partition(" ")
        if quota == "max" or not period:
            return None
        return int(quota) / int(period)
    quota_file, period_file = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
    if quota_file.exists() and period_file.exists():
        quota_us, period_us = int(quota_file.read_text()), int(period_file.read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None


def available_cpus(root: Path = CGROUP) -> int:
    """CPUs this process may use: affinity and cgroup quota, rounded up, at least 1."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota = cgroup_quota(root)
    except (OSError, ValueError):  # an unreadable or odd cgroup file: affinity alone
        quota = None
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)
