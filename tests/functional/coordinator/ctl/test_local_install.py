"""`hs-ctl install` without `--host`: a control node on the machine it runs on, through the deployer's
local connection (no SSH at all).

The machine is a fresh sshd target of the test bed (its own network namespace and copy-on-write system,
testbed/sshd.py), entered directly: the operator's shell there runs this tree's hs-ctl, as it would run
from a checkout. Its sshd only stands for the machine and is never used.
"""

from __future__ import annotations

import re
import sys

import pytest

from testbed.netns import Run
from testbed.sshd import SshLab

pytestmark = pytest.mark.real
SHELL = ("env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
         "HOME=/root", "HS_CTL_CONFIG=/nonexistent", "HS_DEPLOYER_REFRESH_INDEX=false")


def test_install_on_this_machine_then_again_unchanged(run: Run):
    lab = SshLab(run)
    machine = lab.target("local1")
    install = [*SHELL, sys.executable, "-m", "coordinator.ctl.main", "install", "--address", machine.address]
    first = machine.sh(*install, timeout=600).stdout
    assert f"control node {machine.address}: installed" in first and "register console proxy" in first, first
    token = re.search(r"^admin token: (\S+)$", first, re.M)
    assert token, first
    status = machine.sh(*SHELL, "/opt/hoststack/coordinator/current/bin/hs-ctl", "status").stdout
    assert "etcd: running\ncoordinator: running\nconsoleproxy: running\n" in status and "leads" in status, status
    proxies = machine.sh("curl", "-sf", "--cacert", "/etc/hoststack/pki/ca.pem", "-H",  # the node's own CA
                         f"Authorization: Bearer {token.group(1)}", f"https://{machine.address}:8740/v1/console-proxies"
                         ).stdout
    assert f'"address":"{machine.address}"' in proxies.replace(" ", ""), proxies
    again = machine.sh(*install, timeout=600).stdout
    assert f"control node {machine.address}: unchanged" in again and f"admin token: {token.group(1)}" in again
    assert lab.ssh_calls(machine) == 0
