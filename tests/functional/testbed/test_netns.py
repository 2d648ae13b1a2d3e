"""The test bed itself: tagged namespaces always removed, the root namespace untouched, the portal."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from agentkit.proc import run as sh
from testbed.netns import Run, sweep_stale
from testbed.ports import free_port

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


def test_sweep_removes_runs_whose_owner_died():
    code = ("from testbed.netns import Run; import os; r = Run(); r.netns('x'); "
            "print(r.prefix, flush=True); os._exit(9)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    prefix = p.stdout.strip()
    assert f"{prefix}-x" in namespaces()
    assert f"{prefix}-x" in sweep_stale()
    assert prefix not in namespaces()


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
