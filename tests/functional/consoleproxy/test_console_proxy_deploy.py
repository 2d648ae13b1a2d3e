"""Console proxies are deployed, watched and upgraded like agents: `hs deploy consoleproxy` over SSH to an sshd
target, the coordinator upgrades an old one that connects (once it has SSH credentials), a killed proxy is
Disconnected within a heartbeat, and `hs console-proxy reconnect` (ReconnectConsoleProxyAgent) redeploys it.

The real consoleproxy is deployed (its wheel built from this tree, an old release from a copy with another
version); it reaches the coordinator at the controller's bridge address through a portal.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentkit import __version__
from coordinator.client import Client
from testbed.coordinators import Coordinator
from testbed.deploylab import agent_source, coordinator_writable, deployer_toml, wait_listening
from testbed.sshd import SshLab, SshTarget

pytestmark = [pytest.mark.real, pytest.mark.timeout(600)]
OLD = "0.0.9"
AGENT_PORT = 8740
HEARTBEAT_TIMEOUT = 3


@dataclass
class Lab:
    coordinator: Coordinator
    token: str
    agent_url: str
    old_config: Path
    password: str
    target: SshTarget

    def hs(self, *args: str, config: Path | None = None) -> str:
        env = {**os.environ, **({"HS_DEPLOYER_CONFIG": str(config)} if config else {})}
        p = subprocess.run([sys.executable, "-m", "coordinator.cli", "--url", self.coordinator.url,
                            f"--token={self.token}", *args], capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0, p.stdout + p.stderr
        return p.stdout.strip()

    async def proxy(self) -> dict:
        async with Client(self.coordinator.url, self.token) as api:
            found: list[dict] = (await api.get("/v1/console-proxies"))["console_proxies"]
        return found[0]

    async def wait(self, timeout: float, **want: object) -> float:
        t0 = time.monotonic()
        while (got := await self.proxy()) and any(got[k] != v for k, v in want.items()):
            assert time.monotonic() - t0 < timeout, f"console proxy never {want}: {got}"
            await asyncio.sleep(0.2)
        return time.monotonic() - t0


@pytest.fixture(scope="module")
def lab(run, etcd, token) -> Lab:
    ssh = SshLab(run)
    password = "pw-" + run.tag
    agent_url = f"http://{ssh.controller_address}:{AGENT_PORT}"
    config = deployer_toml(run.path("deployer.toml"), ssh, agent_source(run.path("src"), stub=False),
                           run.path("cp-coord"))
    old = deployer_toml(run.path("deployer-old.toml"), ssh, agent_source(run.path("src-old"), OLD, stub=False),
                        run.path("cp-cli"))
    # as its unit runs it: system and home read-only (testbed.sandbox), so that a deploy it runs meets that too
    coordinator = Coordinator(run, etcd, token, name="coord-proxies", writable=coordinator_writable(),
                              heartbeat_timeout=HEARTBEAT_TIMEOUT,
                              heartbeat_interval=1, leader_ttl=2, coordinator_url_for_agents=agent_url,
                              deployer_config=config, deploy_backoff=600,
                              auto_upgrade_with_password=True).start()  # the sshds take passwords
    run.popen([sys.executable, "-m", "testbed.portal", ssh.ctl.name, str(AGENT_PORT), str(coordinator.port),
               ssh.controller_address], log_name="portal")
    wait_listening(ssh.ctl, AGENT_PORT)
    lab = Lab(coordinator, token, agent_url, old, password, ssh.target("cp1", password=password))
    lab.hs("host", "add", "cp1", lab.target.address, "--kind", "consoleproxy",
           *[a for key in ssh.host_keys for a in ("--ssh-host-key", key)])  # deploys accept only recorded keys
    yield lab
    coordinator.stop()


async def test_deploy_upgrade_kill_and_reconnect(lab: Lab):
    out = lab.hs("deploy", "consoleproxy", "cp1", "--password", lab.password, "--agent-url", lab.agent_url,
                 config=lab.old_config)
    assert out == f"cp1: deployed {OLD}"
    await lab.wait(30, state="Connected", agent_version=OLD)
    page = lab.target.sh("curl", "-s", "http://127.0.0.1:8743/novnc/core/rfb.js").stdout
    assert "export default class RFB" in page  # the deployed proxy serves Debian's noVNC

    # with SSH credentials stored, the coordinator upgrades the old proxy it sees connected
    lab.hs("deploy", "ssh", "cp1", "--password", lab.password)
    await lab.wait(180, state="Connected", agent_version=__version__)

    # a dead proxy (its supervisor too) is Disconnected within a heartbeat timeout
    lab.target.sh("sh", "-c", "kill -9 -$(cat /run/hoststack/consoleproxy.pid)")
    assert await lab.wait(HEARTBEAT_TIMEOUT + 5, state="Disconnected") <= HEARTBEAT_TIMEOUT + 1.5
    assert "Disconnected" in lab.hs("console-proxy", "list").splitlines()[-1]

    # ReconnectConsoleProxyAgent: redeploy, which starts it again; it is Connected when the command returns
    out = lab.hs("console-proxy", "reconnect", "cp1")
    assert out.startswith("cp1: ") and "failed" not in out, out
    assert (await lab.proxy())["state"] == "Connected"
    row = lab.hs("console-proxy", "list").splitlines()[-1]
    assert "cp1" in row and "Connected" in row and __version__ in row
