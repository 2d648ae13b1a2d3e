"""The test bed itself: tagged namespaces always removed, the root namespace untouched, the portal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from agentkit.proc import run as sh
from testbed.netns import RUN_ROOT, Run, sweep_stale, teardown
from testbed.ports import free_port
from testbed.procstat import start_time

pytestmark = pytest.mark.real


def root_links() -> str:
    return sh(["ip", "-o", "link"]).stdout


def namespaces() -> str:
    return sh(["ip", "netns", "list"]).stdout


def test_run_removes_everything_even_on_error(monkeypatch):
    monkeypatch.delenv("HS_KEEP_RUNS", raising=False)  # a developer's setting to keep runs for their logs
    before = root_links()
    with pytest.raises(RuntimeError), Run() as r:
        a, b = r.netns("a"), r.netns("b")
        r.veth(a, "eth0", b, "eth0")
        a.ip("addr", "add", "198.18.250.1/24", "dev", "eth0")
        r.popen(a.argv(["sleep", "300"]))
        prefix, workdir = r.prefix, r.dir
        raise RuntimeError("test failure")
    assert prefix not in namespaces()
    assert not workdir.exists()
    assert root_links() == before


def dead_run() -> str:
    """The prefix of a run with a namespace `x`, whose owner died without closing it."""
    code = "from testbed.netns import Run; import os; r = Run(); r.netns('x'); print(r.prefix, flush=True); os._exit(9)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30).stdout.strip()


def test_sweep_removes_runs_whose_owner_died():
    prefix = dead_run()
    assert f"{prefix}-x" in namespaces()
    assert f"{prefix}-x" in sweep_stale()
    assert prefix not in namespaces()


def test_sweep_removes_a_run_whose_owner_pid_went_to_another_process():
    """The dead owner's pid now names a live `sleep` (as far as the run's files tell, a pid handed out again):
    the run is still removed, as its owner is not that process."""
    prefix = dead_run()
    with subprocess.Popen(["sleep", "300"]) as other:
        try:
            (RUN_ROOT / prefix / "owner.pid").write_text(str(other.pid))
            assert f"{prefix}-x" in sweep_stale()
            assert prefix not in namespaces() and other.poll() is None
        finally:
            other.kill()
            teardown(prefix)  # when the sweep kept it


def test_teardown_signals_a_recorded_pid_only_while_its_start_time_matches():
    """Of two `sleep`s a detached run recorded, one's start time is changed as if its pid had gone to another
    process since: teardown stops the other's group and leaves this one alone."""
    r = Run()
    mine, other = r.popen(["sleep", "300"]), r.popen(["sleep", "300"])
    r.detach()
    try:
        started = start_time(other.pid)
        assert started is not None
        pids = r.dir / "pids"
        assert f"{other.pid} started={started}\n" in pids.read_text()
        pids.write_text(f"{mine.pid} started={start_time(mine.pid)}\n{other.pid} started={started - 1}\n")
        teardown(r.prefix)
        assert mine.wait(5) == -signal.SIGTERM
        assert other.poll() is None
    finally:
        for p in (mine, other):
            p.kill()
            p.wait()
        teardown(r.prefix)  # when the test failed before it


def test_portal_reaches_root_loopback_from_a_namespace():
    with Run() as r:
        ns = r.netns("p")
        target = free_port()
        server = r.popen([sys.executable, "-m", "http.server", str(target), "--bind", "127.0.0.1"])
        inner = free_port()
        r.popen([sys.executable, "-m", "testbed.portal", ns.name, str(inner), str(target)])
        deadline = time.monotonic() + 10
        while True:
            out = ns.sh("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{inner}/",
                        rcs=(0, 7, 56))
            if out.stdout == "200":
                break
            assert time.monotonic() < deadline, "portal did not relay"
            time.sleep(0.1)
        assert server.poll() is None


def test_stopping_a_process_reaped_long_ago_signals_no_one(monkeypatch):
    """Its pid is free once reaped, and may be another test's process group by the time the run stops it (a
    coordinator died so): no `killpg` for it, while a live one's group is stopped as before."""
    sent: list[int] = []
    killpg = os.killpg
    monkeypatch.setattr(os, "killpg", lambda pgid, sig: (sent.append(pgid), killpg(pgid, sig)))
    with Run() as r:
        done = r.popen(["true"])
        done.wait()
        live = r.popen(["sleep", "300"])
        r.stop(done)
        r.stop(live)
    assert sent and set(sent) == {live.pid} and live.returncode is not None
