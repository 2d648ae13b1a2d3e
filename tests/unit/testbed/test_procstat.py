"""/proc/<pid>/stat read as the kernel writes it: the start time that tells a process from a later one with its pid."""

from __future__ import annotations

import os

from testbed import procstat


def fake_proc(root, pid: int, comm: str, started: int) -> None:
    """A /proc/<pid>/stat as the kernel writes it: 52 fields, the 22nd the start time in clock ticks."""
    fields = ["S", "1", str(pid), str(pid)] + ["0"] * 15 + [str(started)] + ["0"] * 30
    (root / str(pid)).mkdir()
    (root / str(pid) / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")


def test_start_time_is_field_22_whatever_the_command_name_holds(tmp_path, monkeypatch):
    monkeypatch.setattr(procstat, "PROC", tmp_path)
    fake_proc(tmp_path, 41, "a) (b c) 9", 123456)
    assert procstat.start_time(41) == 123456
    assert procstat.start_time(42) is None  # no /proc entry: no such process


def test_own_start_time_is_read_from_the_real_proc():
    started = procstat.start_time(os.getpid())
    assert started is not None and procstat.same_process(os.getpid(), started)
    assert not procstat.same_process(os.getpid(), started + 1)
    assert procstat.same_process(os.getpid(), None)  # a record from before start times were kept
