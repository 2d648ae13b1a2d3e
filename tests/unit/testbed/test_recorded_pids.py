"""A recorded pid is acted on only while its process is the one recorded: same pid and same start time (field 22
of /proc/<pid>/stat). With 32,768 pids and the thousands a suite spawns, a demo's recorded pid or a dead run's
owner pid is soon another process's (another test's coordinator, a group leader of its own)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testbed import netns, procstat
from tests.unit.testbed.test_procstat import fake_proc


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """RUN_ROOT in a temporary directory; signals and namespace removal recorded, not done."""
    (tmp_path / "runs").mkdir()
    (tmp_path / "proc").mkdir()
    monkeypatch.setattr(netns, "RUN_ROOT", tmp_path / "runs")
    monkeypatch.setattr(procstat, "PROC", tmp_path / "proc")
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "killpg", lambda pgid, sig: sent.append((pgid, sig)))
    monkeypatch.setattr(netns, "remove_tagged", lambda prefix: [f"{prefix}-x"])
    monkeypatch.setattr(netns.time, "sleep", lambda s: None)
    return tmp_path / "runs", tmp_path / "proc", sent


def test_teardown_signals_a_recorded_pid_only_while_its_start_time_matches(runs):
    root, proc, sent = runs
    fake_proc(proc, 300, "coordinator", 5000)  # the recorded process, still there
    fake_proc(proc, 301, "python3", 7777)  # the pid went to another process since (recorded 6000)
    (root / "hsdemo").mkdir()
    (root / "hsdemo" / "pids").write_text("300 started=5000\n301 started=6000\n302 started=6100\n")  # 302: gone
    assert netns.teardown("hsdemo") == ["hsdemo-x"]
    assert sorted(sent) == [(300, 9), (300, 15)]
    assert not (root / "hsdemo").exists()


def test_teardown_signals_a_bare_pid_as_before(runs):
    """A pids file written before start times were kept: a live pid is signalled, a gone one not."""
    root, proc, sent = runs
    fake_proc(proc, 300, "coordinator", 5000)
    (root / "hsdemo").mkdir()
    (root / "hsdemo" / "pids").write_text("300\n302\n")
    netns.teardown("hsdemo")
    assert sorted(sent) == [(300, 9), (300, 15)]


def test_sweep_treats_an_owner_pid_given_to_another_process_as_dead(runs, monkeypatch):
    """The pid is this test's own, alive: a run whose recorded owner started at another time is not this process's."""
    root, _, sent = runs
    monkeypatch.setattr(procstat, "PROC", Path("/proc"))
    started = procstat.start_time(os.getpid())
    assert started is not None
    for name, t in (("hsdead", started - 1), ("hslive", started)):
        (root / name).mkdir()
        (root / name / "owner.started").write_text(str(t))
        (root / name / "owner.pid").write_text(str(os.getpid()))
    (root / "hsold").mkdir()  # written before owner.started was: alive while its pid exists, as before
    (root / "hsold" / "owner.pid").write_text(str(os.getpid()))
    assert netns.sweep_stale() == ["hsdead-x"]
    assert sorted(d.name for d in root.iterdir()) == ["hslive", "hsold"]
    assert sent == []


def test_detach_records_each_live_process_with_its_start_time(runs, monkeypatch):
    root, proc, _ = runs
    fake_proc(proc, 300, "etcd", 5000)

    class Proc:
        def __init__(self, pid: int, returncode: int | None):
            self.pid, self.returncode = pid, returncode

    r = netns.Run(tag="demo")
    r.procs = [Proc(300, None), Proc(301, 0)]  # type: ignore[list-item]  # 301 was reaped: its pid is free
    r.detach()
    assert (root / "hsdemo" / "pids").read_text() == "300 started=5000\n"
    assert (root / "hsdemo" / "owner.pid").read_text() == "detached"
