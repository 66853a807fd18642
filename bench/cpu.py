"""CPU time used by each part of the local stack, read from ``/proc`` (Linux).

Under load everything shares the machine's cores, so the throughput cost of
tracing is the CPU it adds per request, wherever that CPU is spent: in the
functions (spans, encoding, sending) and in the collector (receiving).
:func:`snapshot` before and after a run, then :func:`per_request`.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Parts of the stack, in the order the tables show them.
ROLES = ("function", "collector", "emulator", "load generator", "PostgreSQL")

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _role(pid: int, command: str, name: str) -> str | None:
    if pid == os.getpid():
        return "load generator"
    if "awslambdaric" in command:
        return "function"
    if "dsqltrace.collector" in command:
        return "collector"
    if "dsqltrace.serve" in command:
        return "emulator"
    if name.startswith("postgres") or "/postgres" in command:
        return "PostgreSQL"
    return None


def snapshot() -> dict[tuple[int, str], float]:
    """CPU seconds (user + system) used so far by each process of the stack."""
    used: dict[tuple[int, str], float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        role = _role(int(entry.name), command, name)
        if role is None:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        used[(int(entry.name), role)] = (int(fields[11]) + int(fields[12])) / _TICKS
    return used


def per_request(
    before: dict[tuple[int, str], float], after: dict[tuple[int, str], float], requests: int
) -> dict[str, float]:
    """Microseconds of CPU per request, by role, between two snapshots."""
    totals = dict.fromkeys(ROLES, 0.0)
    for key, seconds in after.items():
        totals[key[1]] += seconds - before.get(key, 0.0)
    return {role: 1e6 * seconds / max(1, requests) for role, seconds in totals.items()}
