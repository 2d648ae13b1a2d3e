"""`hs-ctl install` without `--host`: a control node on the machine it runs on, through the deployer's
local connection (no SSH at all).

The machine is a fresh sshd target of the test bed (its own network namespace and copy-on-write system,
testbed/sshd.py), entered directly: the operator's shell there runs this tree's hs-ctl, as it would run
from a checkout. Its sshd only stands for the machine and is never used. Each of the three tokens the
install prints opens what it is for and no more, and a second install prints the same.
"""

from __future__ import annotations

import re
import sys

import pytest

from testbed.deploylab import REPO
from testbed.netns import Run
from testbed.sshd import SshLab, SshTarget

pytestmark = pytest.mark.real
# PYTHONPATH: this tree, which the target's shell (its mount namespace, cwd /) would not import otherwise
SHELL = ("env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
         "HOME=/root", "HS_CTL_CONFIG=/nonexistent", "HS_DEPLOYER_REFRESH_INDEX=false", f"PYTHONPATH={REPO}")


def _printed(out: str, which: str) -> str:
    """The token `hs-ctl install` printed as `<which> token: …`."""
    m = re.search(rf"^{which} token: (\S+)$", out, re.M)
    assert m, out
    return m.group(1)


def _status(machine: SshTarget, token: str, url: str, *data: str) -> str:
    """The HTTP status `url` answers a bearer of `token` with, asked on the machine over TLS verified with the
    node's CA (with `data`: a POST of it)."""
    post = ("-X", "POST", "-H", "Content-Type: application/json", "--data", *data) if data else ()
    return machine.sh("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", "/etc/hoststack/pki/ca.pem",
                      "-H", f"Authorization: Bearer {token}", *post, url).stdout


def test_install_on_this_machine_then_again_unchanged(run: Run):
    lab = SshLab(run)
    machine = lab.target("local1")
    install = [*SHELL, sys.executable, "-m", "coordinator.ctl.main", "install", "--address", machine.address]
    first = machine.sh(*install, timeout=600).stdout
    assert f"control node {machine.address}: installed" in first and "register console proxy" in first, first
    admin, reader, metrics = (_printed(first, which) for which in ("admin", "reader", "metrics"))
    api, proxy = f"https://{machine.address}:8740", f"https://{machine.address}:8743"
    # a scraper's token reads the coordinator's and the console proxy's metrics and nothing else
    assert [_status(machine, metrics, f"{url}/metrics") for url in (api, proxy)] == ["200", "200"]
    assert _status(machine, metrics, f"{api}/v1/hosts") == "403"
    # the reader token reads what the admin token may and changes nothing
    assert _status(machine, reader, f"{api}/v1/hosts") == "200"
    assert _status(machine, reader, f"{api}/v1/hosts", '{"name": "r1", "address": "198.18.0.250"}') == "403"
    status = machine.sh(*SHELL, "/opt/hoststack/coordinator/current/bin/hs-ctl", "status").stdout
    assert "etcd: running\ncoordinator: running\nconsoleproxy: running\n" in status and "leads" in status, status
    proxies = machine.sh("curl", "-sf", "--cacert", "/etc/hoststack/pki/ca.pem", "-H",  # the node's own CA
                         f"Authorization: Bearer {admin}", f"{api}/v1/console-proxies"
                         ).stdout
    assert f'"address":"{machine.address}"' in proxies.replace(" ", ""), proxies
    again = machine.sh(*install, timeout=600).stdout
    assert f"control node {machine.address}: unchanged" in again, again
    assert [_printed(again, which) for which in ("admin", "reader", "metrics")] == [admin, reader, metrics]
    assert lab.ssh_calls(machine) == 0
