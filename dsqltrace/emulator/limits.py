"""CPU and memory as Lambda gives them: a cgroup per execution environment.

Lambda gives a function CPU in proportion to its memory: 1,769 MB is one
vCPU, 256 MB about 0.145 of one.  Each environment here gets a cgroup (v1
``cpu``, ``cpuacct`` and ``memory`` controllers, as root) with a CFS quota of
``memory / 1769`` of one CPU once init is over (init runs unthrottled, as
Lambda gives init a burst), and the memory limit; ``cpuacct`` tells the CPU each
invocation used.  Where the machine does not
allow it (no cgroup v1, not root), :func:`unavailable` says why: the emulator
then warns once and runs unthrottled.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["FULL_CPU_MB", "EnvironmentLimits", "cpu_share", "unavailable"]

#: The memory size that gives one full vCPU.
FULL_CPU_MB = 1769
_ROOTS = {
    "cpu": Path("/sys/fs/cgroup/cpu"),
    "cpuacct": Path("/sys/fs/cgroup/cpuacct"),
    "memory": Path("/sys/fs/cgroup/memory"),
}
_PERIOD_US = 100_000
_PARENT = "dsqltrace"


def cpu_share(memory_mb: int) -> float:
    """The share of one CPU Lambda gives ``memory_mb`` (at most 1 per 1,769 MB)."""
    return memory_mb / FULL_CPU_MB


def unavailable() -> str | None:
    """Why per-environment limits cannot be applied here, or None when they can."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "not a POSIX system"
    if os.geteuid() != 0:
        return "not running as root"
    for name, root in _ROOTS.items():
        if not (root / "cgroup.procs").exists():
            return f"no cgroup v1 {name} controller at {root}"
        try:
            (root / _PARENT).mkdir(exist_ok=True)
        except OSError as exc:
            return f"cannot create a cgroup under {root}: {exc}"
    return None


class EnvironmentLimits:
    """The cgroups of one environment: made at creation, removed when it has ended."""

    def __init__(self, name: str, memory_mb: int) -> None:
        self.memory_mb = memory_mb
        self._dirs = {k: root / _PARENT / name for k, root in _ROOTS.items()}
        for folder in self._dirs.values():
            folder.mkdir(exist_ok=True)
        (self._dirs["cpu"] / "cpu.cfs_period_us").write_text(str(_PERIOD_US))
        (self._dirs["cpu"] / "cpu.cfs_quota_us").write_text("-1")
        (self._dirs["memory"] / "memory.limit_in_bytes").write_text(str(memory_mb * 1024 * 1024))
        self._procs = [str(folder / "cgroup.procs") for folder in self._dirs.values()]

    @property
    def procs(self) -> tuple[str, ...]:
        """The ``cgroup.procs`` files a process joins the cgroups through."""
        return tuple(self._procs)

    def enter(self) -> None:
        """Move the calling process into the cgroups (run in the child before exec)."""
        pid = str(os.getpid())
        for path in self._procs:
            with open(path, "w") as f:
                f.write(pid)

    def throttle(self) -> None:
        """Apply the CPU quota (init is over)."""
        quota = max(1000, int(_PERIOD_US * cpu_share(self.memory_mb)))
        (self._dirs["cpu"] / "cpu.cfs_quota_us").write_text(str(quota))

    def max_memory_mb(self) -> float | None:
        """The most memory the environment used so far, in MB."""
        try:
            used = int((self._dirs["memory"] / "memory.max_usage_in_bytes").read_text())
        except (OSError, ValueError):
            return None
        return used / (1024 * 1024)

    def cpu_ns(self) -> int | None:
        """CPU time the environment's processes used so far (all threads), in ns."""
        try:
            return int((self._dirs["cpuacct"] / "cpuacct.usage").read_text())
        except (OSError, ValueError):
            return None

    def throttled_ms(self) -> float:
        """How long the CFS quota held the environment back so far."""
        try:
            stat = (self._dirs["cpu"] / "cpu.stat").read_text().split()
        except OSError:
            return 0.0
        fields = dict(zip(stat[::2], stat[1::2], strict=False))
        return int(fields.get("throttled_time", "0")) / 1e6

    def remove(self) -> None:
        """Remove the cgroups (once their processes have exited)."""
        for folder in self._dirs.values():
            with contextlib.suppress(OSError):
                folder.rmdir()
