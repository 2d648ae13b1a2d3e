"""A process's /proc/<pid>/stat, and whether a recorded pid is still the process it was.

A pid is only a number the kernel hands out again once its process is reaped: with 32,768 of them and the
thousands a suite spawns, a pid written to a file is soon another process's. With it we keep the process's
start time (field 22, clock ticks since boot), which a later process with the same number does not share.
"""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: index 0 is field 3 (state), index i field i + 3.
    Split after the last ')', as the name may hold spaces and parentheses. Raises OSError when there is no
    such process."""
    return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    """When the process with this pid started (clock ticks since boot), or None when there is none."""
    try:
        return int(stat_fields(pid)[19])
    except (FileNotFoundError, ProcessLookupError):  # no /proc entry, or the process went while we read it
        return None


def same_process(pid: int, started: int | None) -> bool:
    """Whether `pid` is still the process that was recorded with start time `started`. A record without one
    (`None`, from before start times were kept) only asks that some process has the pid, as it always did."""
    now = start_time(pid)
    return now is not None and (started is None or now == started)
