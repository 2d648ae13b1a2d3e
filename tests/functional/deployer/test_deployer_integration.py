"""`hs deploy` and automatic upgrades end to end: the CLI, a real coordinator on a real etcd, sshd targets.

The agents (the real kvmagent, which connects before libvirtd answers; here it never does) reach the coordinator at
the controller's bridge address through a portal into the root namespace's loopback; that address is
the coordinator's `coordinator_url_for_agents`. The coordinator runs the deployer as a child process
with the same deployer settings the CLI uses.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentkit import __version__
from coordinator.client import ApiClientError, Client
from testbed.coordinators import Coordinator
from testbed.deploylab import (
    SLOW_VENV,
    agent_source,
    coordinator_writable,
    deploy_processes,
    deployer_toml,
    wait_listening,
)
from testbed.sshd import SshLab, SshTarget

pytestmark = pytest.mark.real
OLD = "0.0.9"
HOSTS = ("h1", "h2", "h3")
FRESH = ["probe", "upload", "install", "config", "service", "wait connected"]
AGENT_PORT = 8740
METRICS = "scraper-" + "m" * 16  # the coordinator's metrics token, which scrapers also present to agents


@dataclass
class Lab:
    ssh: SshLab
    coordinator: Coordinator
    token: str
    agent_url: str
    deployer_config: Path
    old_deployer_config: Path
    password: str
    hosts: dict[str, SshTarget]
    uuids: dict[str, str]

    def hs(self, *args: str, config: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "HS_DEPLOYER_CONFIG": str(config or self.deployer_config)}
        p = subprocess.run([sys.executable, "-m", "coordinator.cli", "--url", self.coordinator.url,
                            f"--token={self.token}", *args], capture_output=True, text=True, timeout=300, env=env)
        assert not check or p.returncode == 0, p.stdout + p.stderr
        return p

    def api(self) -> Client:
        return Client(self.coordinator.url, self.token)


@pytest.fixture(scope="module")
def lab(run, etcd, token) -> Lab:
    ssh = SshLab(run)
    password = "pw-" + run.tag
    agent_url = f"http://{ssh.controller_address}:{AGENT_PORT}"
    # the coordinator's deployer has SSH masters of its own, as on a machine apart from the operator's
    src = agent_source(run.path("src"), stub=False)  # the real kvmagent: it connects before libvirtd answers
    config = deployer_toml(run.path("deployer.toml"), ssh, src, run.path("cp-coord"))
    cli = deployer_toml(run.path("deployer-cli.toml"), ssh, src, run.path("cp-cli"))
    old = deployer_toml(run.path("deployer-old.toml"), ssh, agent_source(run.path("src-old"), OLD, stub=False),
                        run.path("cp-cli"))
    # as its unit runs it: system and home read-only (testbed.sandbox), so that a deploy it runs meets that too
    coordinator = Coordinator(run, etcd, token, name="coord-deploy", writable=coordinator_writable(),
                              heartbeat_timeout=3, heartbeat_interval=1,
                              leader_ttl=2, coordinator_url_for_agents=agent_url, deployer_config=config,
                              deploy_backoff=600, auto_upgrade_with_password=True,  # the sshds take passwords
                              metrics_token=METRICS).start()
    run.popen([sys.executable, "-m", "testbed.portal", ssh.ctl.name, str(AGENT_PORT), str(coordinator.port),
               ssh.controller_address], log_name="portal")
    wait_listening(ssh.ctl, AGENT_PORT)
    hosts = {name: ssh.target(name, password=password) for name in HOSTS}
    lab = Lab(ssh, coordinator, token, agent_url, cli, old, password, hosts, {})

    async def register() -> None:  # without SSH credentials: the coordinator leaves them to `hs deploy`
        async with lab.api() as api:
            for name, h in hosts.items():
                body = {"name": name, "address": h.address, "ssh_host_keys": list(ssh.host_keys)}
                lab.uuids[name] = (await api.post("/v1/hosts", body))["uuid"]
    asyncio.run(register())
    yield lab
    coordinator.stop()


def entries(lab: Lab, name: str) -> list[tuple]:
    out = json.loads(lab.hs("--json", "host", "deploy-log", name).stdout)["entries"]
    return [(e["task"], e["phase"], e["ok"], e["message"]) for e in out]


async def host(lab: Lab, name: str) -> dict:
    async with lab.api() as api:
        return await api.get(f"/v1/hosts/{name}")


def config_token(lab: Lab, name: str) -> str:
    return tomllib.loads(lab.hosts[name].read("/etc/hoststack/kvmagent.toml"))["host_token"]


def host_state(h: SshTarget) -> str:
    files = ["/etc/hoststack/kvmagent.toml", "/var/lib/hoststack/deploy/kvmagent.json",
             "/opt/hoststack/kvmagent/supervise.sh", "/opt/hoststack/kvmagent/current"]
    return h.sh("stat", "-c", "%i %y", *files).stdout + (h.read("/run/hoststack/kvmagent.pid") or "")


@pytest.fixture(scope="module")
def fresh(lab: Lab) -> subprocess.CompletedProcess:
    return lab.hs("deploy", "kvmagent", *HOSTS, "--password", lab.password, "--agent-url", lab.agent_url,
                  check=False)


async def test_cli_deploys_fresh_hosts_that_then_connect(lab: Lab, fresh):
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.splitlines() == [f"{n}: deployed {__version__}" for n in HOSTS]
    for name in HOSTS:
        h = await host(lab, name)
        assert (h["state"], h["agent_version"], h["facts"]["agent_version"]) == ("Connected", __version__, __version__)
        assert h["agent_session"] == h["facts"]["agent_session"] and len(h["agent_session"]) == 32  # its process's
        cfg = tomllib.loads(lab.hosts[name].read("/etc/hoststack/kvmagent.toml"))
        assert (cfg["coordinator_url"], cfg["host_uuid"]) == (lab.agent_url, lab.uuids[name])


async def test_the_agent_api_takes_tokens_of_its_own_that_the_deploy_laid_out_never_the_hosts(lab: Lab, fresh):
    async with lab.api() as api:
        kept = {n: await api.post(f"/v1/hosts/{lab.uuids[n]}/agent-api-token", {}) for n in HOSTS}
    for name in HOSTS:
        cfg = tomllib.loads(lab.hosts[name].read("/etc/hoststack/kvmagent.toml"))
        assert (cfg["api_token"], cfg["metrics_token"]) == (kept[name]["api_token"], METRICS)
        assert cfg["api_token"] != cfg["host_token"]
    assert len({k["api_token"] for k in kept.values()}) == len(HOSTS)  # each host its own
    cfg = tomllib.loads(lab.hosts["h1"].read("/etc/hoststack/kvmagent.toml"))

    def status(path: str, token: str) -> str:
        return lab.hosts["h1"].sh("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                                  f"Authorization: Bearer {token}", f"http://127.0.0.1:8741{path}").stdout
    assert status("/v1/state", cfg["api_token"]) == "200"
    assert status("/metrics", METRICS) == "200" and status("/v1/state", METRICS) == "401"  # a scraper: metrics only
    assert status("/v1/state", cfg["host_token"]) == "401" and status("/metrics", cfg["host_token"]) == "401"


async def test_the_deploy_log_has_before_and_after_for_every_task(lab: Lab, fresh):
    for name in HOSTS:
        assert [e[:3] for e in entries(lab, name)] == [x for t in FRESH for x in ((t, "before", None),
                                                                                   (t, "after", True))]
    table = lab.hs("host", "deploy-log", "h1").stdout
    assert "wait connected" in table and "Connected" in table and "installed into /opt/hoststack" in table


async def test_the_registration_token_was_replaced_once_and_for_all(lab: Lab, fresh):
    """A fresh host has no token in its config: the coordinator issued one; redeploys keep it (below)."""
    async with lab.api() as api:
        again = await api.post(f"/v1/hosts/{lab.uuids['h1']}/token", {"keep": config_token(lab, "h1")})
    assert again == {"token": config_token(lab, "h1"), "rotated": False}


async def test_unchanged_redeploy_costs_one_round_trip_and_keeps_the_token(lab: Lab, fresh):
    state = {n: (host_state(lab.hosts[n]), config_token(lab, n)) for n in HOSTS}
    calls = {n: lab.ssh.ssh_calls(lab.hosts[n]) for n in HOSTS}
    logged = {n: len(entries(lab, n)) for n in HOSTS}
    p = lab.hs("deploy", "kvmagent", *HOSTS, "--password", lab.password, "--agent-url", lab.agent_url)
    assert p.stdout.splitlines() == [f"{n}: unchanged" for n in HOSTS]
    for name in HOSTS:
        assert lab.ssh.ssh_calls(lab.hosts[name]) - calls[name] == 1
        assert (host_state(lab.hosts[name]), config_token(lab, name)) == state[name]
        assert [e[:2] for e in entries(lab, name)[logged[name]:]] == [("probe", "before"), ("probe", "after")]
        assert (await host(lab, name))["state"] == "Connected"


async def test_hosts_added_with_credentials_are_deployed_by_the_coordinator_once(lab: Lab, fresh):
    """h4: nobody runs `hs deploy`. h5: an operator does at once; the deploy lock makes one of the two wait,
    so the host is installed once and the other deploy finds it unchanged."""
    for name in ("h4", "h5"):
        lab.hosts[name] = lab.ssh.target(name, password=lab.password)
    added = lab.hs("--json", "host", "add", "h4", lab.hosts["h4"].address, "--password", lab.password)
    lab.uuids["h4"] = json.loads(added.stdout)["uuid"]
    async with lab.api() as api:
        body = {"name": "h5", "address": lab.hosts["h5"].address, "ssh": {"password": lab.password},
                "ssh_host_keys": list(lab.ssh.host_keys)}
        lab.uuids["h5"] = (await api.post("/v1/hosts", body))["uuid"]
    operator = subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli", "--url", lab.coordinator.url, f"--token={lab.token}", "deploy",
         "kvmagent", "h5", "--agent-url", lab.agent_url], env={**os.environ, "HS_DEPLOYER_CONFIG": str(
             lab.deployer_config)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = operator.communicate(timeout=300)
    assert operator.returncode == 0 and out.strip() in (f"h5: deployed {__version__}", "h5: unchanged"), out + err
    for name in ("h4", "h5"):
        await wait_version(lab, name, __version__)
        assert (await host(lab, name))["state"] == "Connected"
    assert [e[:3] for e in await logged(lab, "h4", 0, len(FRESH))] == [
        x for t in FRESH for x in ((t, "before", None), (t, "after", True))]
    # the coordinator's deploy of h5 ends after the operator's, or before it: one install, two probes
    h5 = await logged(lab, "h5", 0, len(FRESH) + 1)
    assert Counter(e[0] for e in h5 if e[1] == "after" and e[2]) == {"probe": 2, **{t: 1 for t in FRESH[1:]}}, h5
    assert not [e for e in h5 if e[2] is False]
    log = lab.coordinator.run.path("coord-deploy.log").read_text()
    assert f"agent deploy: h4: deployed {__version__}" in log
    async with lab.api() as api:  # both deploys wrote the one token the coordinator accepts
        for name in ("h4", "h5"):
            kept = await api.post(f"/v1/hosts/{name}/token", {"keep": config_token(lab, name)})
            assert kept["rotated"] is False


async def logged(lab: Lab, name: str, mark: int, afters: int, timeout: float = 60) -> list[tuple]:
    """The host's deploy log from entry `mark` on, once it holds `afters` "after" entries (posts lag deploys)."""
    deadline = time.monotonic() + timeout
    while True:
        got = entries(lab, name)[mark:]
        if len([e for e in got if e[1] == "after"]) >= afters:
            break
        assert time.monotonic() < deadline, got
        await asyncio.sleep(0.5)
    await asyncio.sleep(0.5)  # nothing more is coming
    return entries(lab, name)[mark:]


async def wait_version(lab: Lab, name: str, version: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (await host(lab, name))["agent_version"] != version:
        assert time.monotonic() < deadline, f"{name} still runs {(await host(lab, name))['agent_version']}"
        await asyncio.sleep(0.5)


async def test_hosts_connecting_with_an_old_agent_are_upgraded_automatically(lab: Lab, fresh):
    """h2 and h3 have good stored credentials: upgraded. h1's are wrong: one failed try, no retry until they
    change."""
    async with lab.api() as api:  # stored now: the hosts run the coordinator's version, nothing happens yet
        await api.put(f"/v1/hosts/{lab.uuids['h1']}/ssh", {"password": "wrong"})
        for name in ("h2", "h3"):
            await api.put(f"/v1/hosts/{name}/ssh", {"password": lab.password})
    tokens = {n: config_token(lab, n) for n in HOSTS}
    marks = {n: len(entries(lab, n)) for n in HOSTS}
    p = lab.hs("deploy", "kvmagent", *HOSTS, "--password", lab.password, "--agent-url", lab.agent_url,
               config=lab.old_deployer_config)
    assert p.stdout.splitlines() == [f"{n}: deployed {OLD}" for n in HOSTS]

    for name in ("h2", "h3"):
        await wait_version(lab, name, __version__)
        upgrade = await logged(lab, name, marks[name], 12)  # the log is posted apart from the deploy: may lag
        # the CLI's deploy of the old version, then the coordinator's upgrade, each dropping the venv it replaced once
        # its agent connected; the token was kept: no config step
        assert all(e[2] for e in upgrade if e[1] == "after")
        assert Counter(e[0] for e in upgrade if e[1] == "after") == {t: 2 for t in [*FRESH, "clean up"]
                                                                     if t != "config"}
        assert config_token(lab, name) == tokens[name]

    await asyncio.sleep(4)  # several HostWatch ticks see h1 on the old version
    failed = [e for e in entries(lab, "h1")[marks["h1"]:] if e[2] is False]
    assert failed == [("probe", "after", False, "ssh: authentication failed")]
    assert (await host(lab, "h1"))["agent_version"] == OLD
    log = lab.coordinator.run.path("coord-deploy.log").read_text()
    assert "agent deploy failed: h1: probe: ssh: authentication failed" in log

    async with lab.api() as api:  # new credentials: tried again at once
        await api.put("/v1/hosts/h1/ssh", {"password": lab.password})
    await wait_version(lab, "h1", __version__)
    assert config_token(lab, "h1") == tokens["h1"]
    with pytest.raises(ApiClientError):  # the admin API is not open to host tokens
        async with Client(lab.coordinator.url, tokens["h1"]) as agent:
            await agent.get("/v1/hosts")


async def test_ctrl_c_of_hs_deploy_while_a_step_runs_ends_it_in_one_line_and_the_next_deploy_completes(lab: Lab):
    """SIGINT to `hs deploy`'s process group (a terminal's Ctrl-C) while a host makes its venv (slowed to 6 s)."""
    from deployer.engine import DEPLOY_INTERRUPTED, INTERRUPTED

    h = lab.ssh.target("slow", password=lab.password)
    h.replace_python(SLOW_VENV.format(delay=6))
    async with lab.api() as api:
        body = {"name": "slow", "address": h.address, "ssh_host_keys": list(lab.ssh.host_keys)}
        uuid = (await api.post("/v1/hosts", body))["uuid"]
    argv = [sys.executable, "-m", "coordinator.cli", "--url", lab.coordinator.url, f"--token={lab.token}", "deploy",
            "kvmagent", "slow", "--password", lab.password, "--agent-url", lab.agent_url]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "HS_DEPLOYER_CONFIG": str(lab.deployer_config)}, start_new_session=True)
    deadline = time.monotonic() + 180
    while ("install", "before") not in [(e[0], e[1]) for e in entries(lab, "slow")]:
        assert p.poll() is None and time.monotonic() < deadline
        time.sleep(0.3)
    time.sleep(1)  # the host makes the venv now
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=60)
    left = deploy_processes(lab.deployer_config, lab.ssh.run.path("cp-cli"))  # while the host still runs the step
    assert (p.returncode, out, err) == (130, "", f"hs: {DEPLOY_INTERRUPTED}\n")
    assert left == []
    async with lab.api() as api:
        with pytest.raises(ApiClientError):  # 404: nobody deploys it
            await api.get(f"/v1/hosts/{uuid}/deploy-lock")
    assert entries(lab, "slow")[-1] == ("install", "after", False, INTERRUPTED)
    # the host finishes the step by itself; the next deploy waits for it and goes on from there
    lab.hs("deploy", "kvmagent", "slow", "--password", lab.password, "--agent-url", lab.agent_url)
    assert (await host(lab, "slow"))["state"] == "Connected"
