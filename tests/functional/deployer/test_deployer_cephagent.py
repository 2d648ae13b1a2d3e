"""A real cephagent deployed to an sshd target that reaches the test Ceph cluster.

The target (testbed/sshd.py) is a Ceph mon host as the deployer finds one: Debian's rados/rbd and
ceph-common, and /etc/ceph/ceph.conf naming the cluster. The cluster runs on loopback ports of the root
namespace (testbed/ceph.py); portals inside the target's namespace carry each of its daemons' ports
(mons, OSD, mgr) to them, so the agent's librados talks to the cluster at the addresses the cluster
advertises. A real coordinator reaches the agent as it reaches any ceph host, at the host's address on
`cephagent_port`: here a loopback address of the root namespace with a portal into the target.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tomllib

import aiohttp
import pytest

from agentkit import __version__
from agentkit.proc import run as run_process
from coordinator.client import Client
from deployer.deploy import DeploySettings, deploy
from deployer.model import Target
from testbed.coordinators import Coordinator
from testbed.deploylab import agent_source
from testbed.ports import free_port
from testbed.sshd import SshLab

pytestmark = pytest.mark.real
HOST_ADDRESS = "127.0.0.3"  # where the coordinator finds the ceph host's agent (a portal into the target)


def ceph_ports(ceph) -> list[int]:  # noqa: ANN001
    """The TCP ports the cluster's daemons listen on (mons v1/v2, OSD, mgr)."""
    pids = {str(p.pid) for p in ceph.procs}
    lines = run_process(["ss", "-Htlnp"]).stdout.splitlines()
    return sorted({int(line.split()[3].rsplit(":", 1)[1]) for line in lines
                   if any(f"pid={pid}," in line for pid in pids) and "127.0.0.1:" in line.split()[3]})


@pytest.fixture(scope="module")
def mon_host(run, ceph):  # noqa: ANN001
    lab = SshLab(run)
    target = lab.target("mon1")
    target.sh("mkdir", "-p", "/etc/ceph")
    run_process(target.argv(["tee", "/etc/ceph/ceph.conf"]), input=ceph.conf.read_text())
    for port in ceph_ports(ceph):
        run.popen([sys.executable, "-m", "testbed.portal", target.ns.name, str(port), str(port)],
                  log_name=f"ceph-portal-{port}")
    return lab, target


@pytest.fixture(scope="module")
def ceph_coordinator_to_target(run, etcd, token, mon_host):  # noqa: ANN001
    lab, target = mon_host
    port = free_port()
    run.popen([sys.executable, "-m", "testbed.portal", "--into", target.ns.name, str(port), "8742", target.address,
               HOST_ADDRESS], log_name="cephagent-portal")
    c = Coordinator(run, etcd, token, name="coord-cephdeploy", cephagent_port=port,
                    heartbeat_interval=1, heartbeat_timeout=3, leader_ttl=2, auto_deploy="false").start()
    yield c, port
    c.stop()


async def _register(url: str, token: str) -> dict:
    async with Client(url, token) as api:
        return await api.post("/v1/hosts", {"name": "mon1", "address": HOST_ADDRESS, "kind": "ceph"})


async def _host(url: str, token: str, uuid_: str) -> dict:
    async with Client(url, token) as api:
        return await api.get(f"/v1/hosts/{uuid_}")


async def _use_the_cluster(port: int, token: str) -> dict:
    """What the deployed agent answers and does: the cluster's identity, a pool, an RBD image in it."""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(f"http://{HOST_ADDRESS}:{port}", headers=headers) as agent:
        async with agent.get("/v1/cluster") as resp:
            assert resp.status == 200, await resp.text()
            cluster = await resp.json()
        async with agent.post("/v1/pools/check-or-create", json={"name": "hs-deployed"}) as resp:
            assert resp.status == 201, await resp.text()
        async with agent.post("/v1/volumes", json={"pool": "hs-deployed", "name": "v1", "size": 4 << 20}) as resp:
            assert resp.status in (200, 201), await resp.text()
    return cluster


def test_a_real_cephagent_is_deployed_and_serves_the_cluster(run, ceph, mon_host, ceph_coordinator_to_target, token):
    """deploy() must run in the main thread (ansible sets signal handlers): this test is synchronous."""
    lab, target = mon_host
    coordinator, port = ceph_coordinator_to_target
    host = asyncio.run(_register(coordinator.url, token))
    settings = DeploySettings(source_dir=agent_source(run.path("src"), stub=False),
                              ssh_executable=str(lab.ssh_executable),
                              control_path_dir=run.path("cp"), refresh_index=False, connected_timeout=90)
    t = Target(name="mon1", address=target.address, host_uuid=host["uuid"], host_token=None, password=target.password,
               ssh_host_keys=lab.host_keys)
    r = deploy("cephagent", [t], coordinator.url, admin_token=token, settings=settings)["mon1"]
    assert (r.ok, r.message) == (True, f"mon1: deployed {__version__}"), r
    assert r.tasks == ["probe", "upload", "install", "config", "service", "wait connected"]
    seen = asyncio.run(_host(coordinator.url, token, host["uuid"]))
    assert (seen["state"], seen["agent_version"]) == ("Connected", __version__)
    own = tomllib.loads(target.read("/etc/hoststack/cephagent.toml") or "")["token"]  # the host's own token
    assert asyncio.run(_use_the_cluster(port, own))["fsid"] == ceph.fsid
    assert "hs-deployed" in json.loads(ceph.mon_command("osd pool ls"))
    assert "v1" in run_process(["rbd", "-c", str(ceph.conf), "ls", "hs-deployed"]).stdout.split()
    assert "/opt/hoststack/cephagent/current/bin/cephagent" in (target.read("/opt/hoststack/cephagent/supervise.sh")
                                                                 or "")
