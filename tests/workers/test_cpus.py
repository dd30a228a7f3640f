"""The default worker count: affinity and cgroup quota (v2 cpu.max, v1 cfs), rounded up."""

from __future__ import annotations

import os
from pathlib import Path

from service.workers.cpus import available_cpus, cgroup_quota
from service.workers.supervisor import Backoff


def affinity() -> int:
    return len(os.sched_getaffinity(0))


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("350000 100000\n")
    assert cgroup_quota(tmp_path) == 3.5
    assert available_cpus(tmp_path) == min(affinity(), 4)


def test_cgroup_v2_unlimited(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(tmp_path) is None
    assert available_cpus(tmp_path) == affinity()


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(tmp_path) == 0.5
    assert available_cpus(tmp_path) == 1  # half a CPU still runs one worker


def test_cgroup_v1_unlimited_and_no_cgroup(tmp_path: Path) -> None:
    assert available_cpus(tmp_path) == affinity()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(tmp_path) is None


def test_an_unreadable_quota_falls_back_to_affinity(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("garbage here\n")
    assert available_cpus(tmp_path) == affinity()


def test_backoff_doubles_for_quick_exits_and_resets_after_a_stable_run() -> None:
    backoff = Backoff(first_s=0.25, max_s=2.0, stable_s=30.0)
    assert [backoff.after_exit(1.0) for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert backoff.after_exit(60.0) == 0.25
