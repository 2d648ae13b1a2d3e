"""CPU time of test-bed processes, for benchmarks that say where the time went."""

from __future__ import annotations

import os

from testbed.procstat import stat_fields


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far (/proc/<pid>/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = stat_fields(pid)
        total += int(fields[11]) + int(fields[12])
    return total / tick
