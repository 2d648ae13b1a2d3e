"""A real cephagent deployed to an sshd target that reaches the test Ceph cluster.

The target (testbed/sshd.py) is a Ceph mon host as the deployer finds one: Debian's rados/rbd and
ceph-common, and /etc/ceph/ceph.conf naming the cluster. The cluster runs on loopback ports of the root
namespace (testbed/ceph.py); portals inside the target's namespace carry each of its daemons' ports
(mons, OSD, mgr) to them, so the agent's librados talks to the cluster at the addresses the cluster
advertises. A real coordinator reaches the agent as it reaches any ceph host, at the host's address on
`cephagent_port`: here a loopback address of the root namespace with a portal into the target.

Adding Ceph backup storage with a monUrl that carries SSH credentials deploys the agent by itself: a coordinator
of its own etcd that deploys agents (the other one does not) registers the mon as a ceph host, its elected replica
deploys the agent, and `hs ceph add-backup-storage` waits for it. The monUrl's mon_server_ip is one address for
both ways in: ssh from the controller's namespace and the coordinator's calls on `cephagent_port` reach the second
target through portals.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import aiohttp
import pytest

from agentkit import __version__
from agentkit.proc import run as run_process
from coordinator.client import Client
from deployer.deploy import DeploySettings
from deployer.model import Target
from testbed.coordinators import Coordinator
from testbed.deploylab import agent_source, deploy_apart, deployer_toml, wait_listening
from testbed.etcd import Etcd
from testbed.ports import free_port
from testbed.sshd import SshLab, SshTarget

pytestmark = pytest.mark.real
HOST_ADDRESS = "127.0.0.3"  # where the coordinator finds the ceph host's agent (a portal into the target)
MON_ADDRESS = "127.0.0.4"  # the second target's mon_server_ip: its sshd and its agent, each through a portal
PORTAL = [sys.executable, "-m", "testbed.portal"]


def ceph_ports(ceph) -> list[int]:  # noqa: ANN001
    """The TCP ports the cluster's daemons listen on (mons v1/v2, OSD, mgr)."""
    pids = {str(p.pid) for p in ceph.procs}
    lines = run_process(["ss", "-Htlnp"]).stdout.splitlines()
    return sorted({int(line.split()[3].rsplit(":", 1)[1]) for line in lines
                   if any(f"pid={pid}," in line for pid in pids) and "127.0.0.1:" in line.split()[3]})


def ceph_target(run, ceph, lab: SshLab, name: str) -> SshTarget:  # noqa: ANN001
    """A target set up as a Ceph mon host: the cluster's ceph.conf, and portals to the cluster's daemons."""
    target = lab.target(name)
    target.sh("mkdir", "-p", "/etc/ceph")
    run_process(target.argv(["tee", "/etc/ceph/ceph.conf"]), input=ceph.conf.read_text())
    for port in ceph_ports(ceph):
        run.popen([*PORTAL, target.ns.name, str(port), str(port)], log_name=f"ceph-portal-{name}-{port}")
    return target


@pytest.fixture(scope="module")
def mon_host(run, ceph):  # noqa: ANN001
    lab = SshLab(run)
    return lab, ceph_target(run, ceph, lab, "mon1")


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
    lab, target = mon_host
    coordinator, port = ceph_coordinator_to_target
    host = asyncio.run(_register(coordinator.url, token))
    settings = DeploySettings(source_dir=agent_source(run.path("src"), stub=False),
                              ssh_executable=str(lab.ssh_executable),
                              control_path_dir=run.path("cp"), refresh_index=False, connected_timeout=90)
    t = Target(name="mon1", address=target.address, host_uuid=host["uuid"], host_token=None, password=target.password,
               ssh_host_keys=lab.host_keys)
    r = deploy_apart("cephagent", [t], coordinator.url, admin_token=token, settings=settings)["mon1"]
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


class AutoDeploying:
    """The coordinator that deploys agents itself, the second mon host, and `hs` as an operator runs it."""

    def __init__(self, coordinator: Coordinator, lab: SshLab, target: SshTarget, token: str, deployer_config: Path):
        self.coordinator, self.lab, self.target, self.token = coordinator, lab, target, token
        self.deployer_config = deployer_config

    def hs(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "HS_DEPLOYER_CONFIG": str(self.deployer_config)}  # how `hs` reads SSH host keys
        return subprocess.run([sys.executable, "-m", "coordinator.cli", "--url", self.coordinator.url,
                               f"--token={self.token}", *args], capture_output=True, text=True, timeout=400, env=env)

    def api(self) -> Client:
        return Client(self.coordinator.url, self.token)


@pytest.fixture(scope="module")
def auto_deploying(run, ceph, token, mon_host):  # noqa: ANN001
    lab, _ = mon_host
    target = ceph_target(run, ceph, lab, "mon2")
    relay, agent_port = free_port(), free_port()
    run.popen([*PORTAL, "--into", target.ns.name, str(relay), "22", target.address], log_name="ssh-portal-root")
    run.popen([*PORTAL, lab.ctl.name, "22", str(relay), MON_ADDRESS], log_name="ssh-portal-ctl")
    run.popen([*PORTAL, "--into", target.ns.name, str(agent_port), "8742", target.address, MON_ADDRESS],
              log_name="cephagent-portal-mon2")
    wait_listening(lab.ctl, 22)
    etcd = Etcd(run, name="etcd-auto").start()
    config = deployer_toml(run.path("deployer-auto.toml"), lab, agent_source(run.path("src-auto"), stub=False),
                           run.path("cp-auto"))
    c = Coordinator(run, etcd, token, name="coord-cephauto", cephagent_port=agent_port, heartbeat_interval=1,
                    heartbeat_timeout=3, leader_ttl=2, deployer_config=config, deploy_backoff=600)
    c.settings["coordinator_url_for_agents"] = c.url  # automatic deploys need it (a cephagent never dials in)
    c.start()
    yield AutoDeploying(c, lab, target, token, config)
    c.stop()
    etcd.stop()


async def _storages(lab: AutoDeploying) -> list[dict]:
    async with lab.api() as api:
        return (await api.get("/v1/ceph-backup-storage", live="false"))["backup_storages"]


async def _ceph_hosts(lab: AutoDeploying) -> list[dict]:
    async with lab.api() as api:
        return [h for h in (await api.get("/v1/hosts"))["hosts"] if h["kind"] == "ceph"]


def _mon_url(ceph, password: str) -> str:  # noqa: ANN001
    return f"root:{password}@{MON_ADDRESS}/?monPort={next(iter(ceph.mons.values())).v1_port}"


def test_a_wrong_mon_password_answers_its_cause_and_adds_nothing(ceph, auto_deploying):
    lab = auto_deploying
    wrong = f"wrong-{lab.target.password}"
    p = lab.hs("ceph", "add-backup-storage", "bs-auto", "--mon-url", _mon_url(ceph, wrong))
    assert (p.returncode, p.stdout) == (1, "")
    assert p.stderr == (f"hs: the cephagent deploy failed on {MON_ADDRESS} (host ceph-{MON_ADDRESS}): probe: ssh: "
                        f"authentication failed. Correct the monUrl (or the host: hs host deploy-log ceph-{MON_ADDRESS}"
                        ") and add again (argument --mon-url, field mon_urls)\n")
    assert asyncio.run(_storages(lab)) == []
    [host] = asyncio.run(_ceph_hosts(lab))  # registered with the key `hs` read, for the same command to go on
    assert (host["name"], host["address"], host["state"], host["ssh_credentials"], host["ssh_host_keys"]) == (
        f"ceph-{MON_ADDRESS}", MON_ADDRESS, "Disconnected", True, list(lab.lab.host_keys))


def test_a_monurl_with_credentials_deploys_the_mons_agent_and_adds_the_storage(ceph, auto_deploying):
    """The same command with the right password: the mon host takes it, its agent is deployed and connects, and the
    storage is added in the one command; the mon host is not registered twice."""
    lab = auto_deploying
    p = lab.hs("--json", "ceph", "add-backup-storage", "bs-auto", "--mon-url", _mon_url(ceph, lab.target.password))
    assert p.returncode == 0, p.stderr
    added = json.loads(p.stdout)
    assert (added["name"], added["fsid"]) == ("bs-auto", ceph.fsid)
    assert lab.target.password not in p.stdout + p.stderr
    [host] = asyncio.run(_ceph_hosts(lab))
    assert (host["name"], host["state"], host["agent_version"]) == (f"ceph-{MON_ADDRESS}", "Connected", __version__)
    assert [s["name"] for s in asyncio.run(_storages(lab))] == ["bs-auto"]
    assert added["pools"][0]["name"] in json.loads(ceph.mon_command("osd pool ls"))
    tasks = [e["task"] for e in json.loads(lab.hs("--json", "host", "deploy-log", host["name"]).stdout)["entries"]]
    assert tasks[:2] == ["probe", "probe"] and tasks[-1] == "wait connected"
    log = lab.coordinator.run.path(f"{lab.coordinator.name}.log").read_text()
    assert f"ceph host ceph-{MON_ADDRESS}" in log and lab.target.password not in log  # nor the wrong one, which has it
