"""`make demo` then `make demo-down` (the module they run): the system works (a VM from an image store's image
on local storage, a command run in it through the console proxy, its EIP answering from a public namespace, a
verified etcd backup), then nothing is left."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from agentkit.proc import run as sh
from testbed.demo import PREFIX
from testbed.netns import RUN_ROOT

pytestmark = pytest.mark.real


def leftovers() -> list[str]:
    names = [n.split()[0] for n in sh(["ip", "netns", "list"]).stdout.splitlines() if n.startswith(PREFIX)]
    procs = [line for line in sh(["ps", "-eo", "args"]).stdout.splitlines() if str(RUN_ROOT / PREFIX) in line]
    files = [str(RUN_ROOT / PREFIX)] if (RUN_ROOT / PREFIX).exists() else []
    return names + procs + files


def test_demo_up_shows_the_system_and_down_removes_everything():
    if leftovers():
        pytest.skip("a demo is running on this machine")
    try:
        up = subprocess.run([sys.executable, "-m", "testbed.demo", "up"], capture_output=True, text=True,
                            timeout=400)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert "registered and Connected" in up.stdout and "observed Running" in up.stdout
        assert "HS-USERDATA-BEGIN" in up.stdout and "from-the-hoststack-demo" in up.stdout
        assert "image tiny Ready" in up.stdout and "from image tiny on demo-local" in up.stdout
        assert "console proxy console1 registered and Connected" in up.stdout
        assert re.search(r"in the guest: 'Linux \d[^']*\\n\d+\.\d+ \d+\.\d+' \(rc 0\)", up.stdout), up.stdout[-3000:]
        assert "answers ping from the internet namespace" in up.stdout
        assert re.search(r"^demo: backup \S+/backups/\S+ \(\d+ bytes, sha256 [0-9a-f]{64}\)", up.stdout, re.M), \
            up.stdout[-3000:]
        assert leftovers(), "the demo should stay up until demo-down"
    finally:
        down = subprocess.run([sys.executable, "-m", "testbed.demo", "down"], capture_output=True, text=True,
                              timeout=120)
    assert down.returncode == 0, down.stderr
    assert leftovers() == []
