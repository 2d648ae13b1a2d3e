"""The deployer against real sshd targets in namespaces, a stub coordinator and agents that dial it.

One fresh deploy covers seven hosts at once: three good ones and one per failure (unreachable, wrong
password, missing package, full disk), so "the others still deploy" is checked in the same run.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentkit.proc import run as run_process
from deployer.deploy import current_version, needs_upgrade
from deployer.engine import REMOTE_TMP
from deployer.model import Result
from testbed.deploylab import agent_source, deploy_apart

pytestmark = pytest.mark.real
GOOD = ("h1", "h2", "h3")
FRESH = ["probe", "upload", "install", "config", "service", "wait connected"]
AGENT = "/opt/hoststack/kvmagent/current/bin/kvmagent"
PYTHON = "/opt/hoststack/kvmagent/current/bin/python"
# The venv's installed .py files without their bytecode (the first five).
UNCOMPILED = ("import importlib.util as u, pathlib, site\n"
              "print([str(p) for d in site.getsitepackages() if d.startswith('/opt/')"
              " for p in pathlib.Path(d).rglob('*.py') if not pathlib.Path(u.cache_from_source(str(p))).exists()][:5])")


@dataclass
class First:
    results: dict[str, Result]
    entries: list[dict]


def run_deploy(fleet, names, **kw) -> dict[str, Result]:
    return deploy_apart("kvmagent", [fleet.targets[n] for n in names], fleet.coordinator.agent_url,
                        admin_token=fleet.admin_token,
                        api_url=fleet.coordinator.api_url, **{"settings": fleet.settings, **kw})


@pytest.fixture(scope="module")
def first(fleet) -> First:
    for name in GOOD:
        fleet.add(name)
    fleet.add("unreach", sshd=False)
    fleet.add("badpw", password="not-the-password")
    fleet.add("full")
    fleet.hosts["full"].mount_tmpfs("/opt/hoststack", "1m")
    fleet.add("nopkg", has_fake_package=False)
    results = run_deploy(fleet, list(fleet.targets))
    return First(results, list(fleet.coordinator.entries))


def agent_pid(fleet, name: str) -> int:
    return fleet.coordinator.hellos[fleet.targets[name].host_uuid]["pid"]


def test_fresh_hosts_run_the_agent_with_their_config_and_connect(fleet, first: First):
    for name in GOOD:
        r, t, host = first.results[name], fleet.targets[name], fleet.hosts[name]
        assert (r.ok, r.changed, r.tasks) == (True, True, FRESH), r
        config = host.read("/etc/hoststack/kvmagent.toml")
        assert tomllib.loads(config) == {"coordinator_url": fleet.coordinator.agent_url,
                                         "host_uuid": t.host_uuid, "host_token": t.host_token,
                                         # the agent API's own tokens, as the coordinator gave them
                                         "api_token": fleet.coordinator.api_tokens[t.host_uuid],
                                         "metrics_token": fleet.coordinator.metrics_token,
                                         "tls": {"plain_http": True}}  # the stub coordinator speaks plain HTTP
        assert host.sh("stat", "-c", "%a", "/etc/hoststack/kvmagent.toml").stdout.strip() == "600"
        hello = fleet.coordinator.hellos[t.host_uuid]
        assert hello["version"] == current_version(fleet.settings)
        assert AGENT in host.read(f"/proc/{hello['pid']}/cmdline").replace("\0", " ")
        assert host.sh("readlink", "/opt/hoststack/kvmagent/current").stdout.startswith("venv-")
        # compiled at install: under its unit's read-only /opt a process could not write its bytecode
        assert host.sh(PYTHON, "-c", UNCOMPILED).stdout == "[]\n"
        # ansible's temp directory and each one above it: root's, writable by no one else (a local user who
        # could plant one could redirect root's writes)
        dirs = [REMOTE_TMP, *map(str, Path(REMOTE_TMP).parents)]
        for line in host.sh("stat", "-c", "%U %a %n", *dirs).stdout.splitlines():
            owner, mode, _ = line.split()
            assert owner == "root" and not int(mode, 8) & 0o022, line



def test_every_task_is_logged_before_and_after(fleet, first: First):
    for name, r in first.results.items():
        uuid = fleet.targets[name].host_uuid
        logged = [(e["task"], e["phase"], e["ok"]) for e in first.entries if e["uuid"] == uuid]
        want = [x for task in r.tasks for x in ((task, "before", None), (task, "after", r.ok or task != r.task))]
        assert logged == want, name
        after = [e for e in first.entries if e["uuid"] == uuid and e["phase"] == "after"]
        assert all(e["host"] == name and e["duration_ms"] >= 0 for e in after)


def test_failures_name_host_task_and_cause_while_others_deploy(fleet, first: First):
    got = {n: first.results[n].message for n in ("unreach", "badpw", "nopkg", "full")}
    assert got == {
        "unreach": "unreach: probe: ssh: connection refused",
        "badpw": "badpw: probe: ssh: authentication failed",
        "nopkg": f"nopkg: packages: apt: package {fleet.fake_package} not found",
        "full": "full: install: disk full: /opt/hoststack/kvmagent",
    }
    for name in got:  # one failed entry in the log, carrying the cause (not a dump)
        failed = [e for e in first.entries if e["uuid"] == fleet.targets[name].host_uuid and e["ok"] is False]
        assert len(failed) == 1 and got[name].endswith(failed[0]["message"])
    assert all(first.results[n].ok for n in GOOD)


def test_supervisor_restarts_a_killed_agent(fleet, first: First):
    old = agent_pid(fleet, "h2")
    fleet.hosts["h2"].sh("kill", "-9", str(old))
    deadline = time.monotonic() + 15
    while agent_pid(fleet, "h2") == old and time.monotonic() < deadline:
        time.sleep(0.2)
    assert agent_pid(fleet, "h2") != old


def host_state(fleet, name: str) -> tuple:
    host = fleet.hosts[name]
    files = ["/etc/hoststack/kvmagent.toml", "/var/lib/hoststack/deploy/kvmagent.json",
             "/opt/hoststack/kvmagent/supervise.sh", "/opt/hoststack/kvmagent/current"]
    return host.sh("stat", "-c", "%i %y", *files).stdout, host.read("/run/hoststack/kvmagent.pid")


def test_unchanged_redeploy_costs_one_round_trip_and_changes_nothing(fleet, first: First):
    assert all(r.ok for r in run_deploy(fleet, GOOD).values())  # converge, whatever ran before
    calls = {n: fleet.lab.ssh_calls(fleet.hosts[n]) for n in GOOD}
    state = {n: host_state(fleet, n) for n in GOOD}
    logged = len(fleet.coordinator.entries)
    results = run_deploy(fleet, GOOD)
    for name in GOOD:
        r = results[name]
        assert (r.ok, r.changed, r.tasks, r.message) == (True, False, ["probe"], f"{name}: unchanged")
        assert fleet.lab.ssh_calls(fleet.hosts[name]) - calls[name] == 1
        assert host_state(fleet, name) == state[name]
    tasks = {(e["task"], e["phase"]) for e in fleet.coordinator.entries[logged:]}
    assert tasks == {("probe", "before"), ("probe", "after")}


def test_a_deploy_waits_while_another_deploy_holds_the_hosts_lock(fleet, first: First):
    """h1 is being deployed by someone else: this deploy probes it only once that deploy is over."""
    locks, uuid = fleet.coordinator.locks, fleet.targets["h1"].host_uuid
    assert all(r.ok for r in run_deploy(fleet, ["h1", "h2"]).values()) and locks == {}
    calls = fleet.lab.ssh_calls(fleet.hosts["h1"])
    locks[uuid] = "someone else's"
    release = threading.Timer(2, locks.pop, (uuid,))
    release.start()
    t0 = time.monotonic()
    results = run_deploy(fleet, ["h1", "h2"])
    assert [results[n].message for n in ("h1", "h2")] == ["h1: unchanged", "h2: unchanged"]
    assert time.monotonic() - t0 >= 2 and fleet.lab.ssh_calls(fleet.hosts["h1"]) - calls == 1
    assert locks == {}  # this deploy released what it took

    locks[uuid] = "someone else's"  # held for longer than lock_wait: h1 fails, naming the lock; h2 is done
    try:
        results = run_deploy(fleet, ["h1", "h2"], settings=fleet.settings.model_copy(update={"lock_wait": 0}))
    finally:
        locks.pop(uuid)
    assert results["h1"].message == f"h1: deploy lock: coordinator: HTTP 409: host {uuid} is being deployed"
    assert (results["h1"].tasks, results["h2"].message) == (["deploy lock"], "h2: unchanged")


def test_new_version_is_detected_and_upgrades_on_redeploy(fleet, first: First, run):
    settings = fleet.settings.model_copy(update={"source_dir": agent_source(run.path("src-next"), "99.0.0")})
    old = current_version(fleet.settings)
    assert needs_upgrade(old, settings) and not needs_upgrade("99.0.0", settings)
    assert not needs_upgrade(old, fleet.settings)
    host, t = fleet.hosts["h3"], fleet.targets["h3"]
    old_pid, old_venv = agent_pid(fleet, "h3"), host.sh("readlink", "/opt/hoststack/kvmagent/current").stdout
    r = run_deploy(fleet, ["h3"], settings=settings, deploy_log=False)["h3"]
    assert (r.ok, r.changed, r.tasks) == (True, True, ["probe", "upload", "install", "service", "wait connected",
                                                       "clean up"])
    hello = fleet.coordinator.hellos[t.host_uuid]  # what it waited for: the new agent's own, from a new process
    assert (hello["version"], hello["wheel"]) == ("99.0.0", "99.0.0") and hello["pid"] != old_pid
    venvs = host.sh("ls", "/opt/hoststack/kvmagent").stdout.split()
    assert [v for v in venvs if v.startswith("venv-")] == [host.sh("readlink", "/opt/hoststack/kvmagent/current")
                                                           .stdout.strip()] != [old_venv.strip()]
    again = run_deploy(fleet, ["h3"], settings=settings, deploy_log=False)["h3"]
    assert (again.changed, again.tasks) == (False, ["probe"])


def test_child_process_interface(fleet, first, run):
    """`python -m deployer` as the coordinator runs it: request on stdin, settings from its TOML, JSON out."""
    s = fleet.settings
    config = run.path("deployer.toml")
    config.write_text("".join(f"{k} = {json.dumps(str(v) if isinstance(v, Path) else v)}\n" for k, v in {
        "source_dir": s.source_dir, "ssh_executable": s.ssh_executable,
        "control_path_dir": s.control_path_dir, "extra_packages": s.extra_packages}.items()))
    t = fleet.targets["h1"]
    request = {"agent": "kvmagent", "coordinator_url": fleet.coordinator.agent_url, "admin_token": fleet.admin_token,
               "api_url": fleet.coordinator.api_url, "targets": [dataclasses.asdict(t)]}
    p = run_process(["env", f"HS_DEPLOYER_CONFIG={config}", sys.executable, "-m", "deployer"],
                    input=json.dumps(request), rcs=(0, 1), timeout=300)
    out = json.loads(p.stdout)["h1"]
    assert out["ok"] and p.returncode == 0, out
    assert out["host"] == "h1" and out["tasks"][0] == "probe"
    bad = run_process([sys.executable, "-m", "deployer"], rcs=(2,), timeout=60,
                      input='{"agent": "nope", "targets": [], "coordinator_url": "http://c"}')
    assert bad.returncode == 2 and "unknown agent" in json.loads(bad.stdout)["error"]


LINGERING_SSH = """\
#!/bin/sh
# ssh as a loaded machine runs it: its stdin is gone well before the process is, so the pipelined
# module ansible writes meets a broken pipe while ssh still runs.
{ssh} "$@"
rc=$?
exec <&-
sleep 0.5
exit $rc
"""


def test_a_wrong_password_is_named_even_when_ssh_outlives_its_stdin(fleet, run):
    """ansible writes the module into an ssh that has quit after the failed login: the cause stays ssh's."""
    wrapper = run.path("ssh-lingering")
    wrapper.write_text(LINGERING_SSH.format(ssh=fleet.settings.ssh_executable))
    wrapper.chmod(0o755)
    t = fleet.add("badpw2", password="not-the-password")
    settings = fleet.settings.model_copy(update={"ssh_executable": str(wrapper)})
    r = run_deploy(fleet, ["badpw2"], settings=settings)["badpw2"]
    assert (r.ok, r.tasks, r.message) == (False, ["probe"], "badpw2: probe: ssh: authentication failed"), t


def test_an_agent_that_does_not_connect_fails_the_deploy_with_its_own_last_words(fleet):
    """A setting the agent cannot work with (here a coordinator URL where nothing listens): the deploy's message
    carries what the agent wrote, as the operator would otherwise log in to read it."""
    fleet.add("wrongurl")
    nowhere = fleet.coordinator.agent_url.rsplit(":", 1)[0] + ":9"
    r = deploy_apart("kvmagent", [fleet.targets["wrongurl"]], nowhere, admin_token=fleet.admin_token,
                     api_url=fleet.coordinator.api_url,
                     settings=fleet.settings.model_copy(update={"connected_timeout": 8}))["wrongurl"]
    assert (r.ok, r.task) == (False, "wait connected"), r
    assert r.message.startswith("wrongurl: wait connected: agent did not report Connected within 8s; its service: "
                                "supervisor running: "), r.message
    assert r.message.endswith(  # a fresh host: nothing to go back to
        "coordinator unreachable: <urlopen error [Errno 111] Connection refused>; the new version "
        f"{current_version(fleet.settings)} did not come up; nothing to roll back to: no agent was installed before"
    ), r.message


def test_a_config_only_redeploy_whose_agent_does_not_come_up_fails_its_wait_and_is_rolled_back(fleet):
    """The same version with a config its agent cannot work with (a coordinator URL where nothing listens). The agent
    it stopped stays Connected, with that version, for heartbeat_timeout after its last hello: before, the wait took
    that for the restarted agent and the deploy said `deployed`, leaving no agent connected. Now the wait asks for an
    agent in another session than the stopped one's, fails, and the config before is back with an agent of its own."""
    fleet.add("confonly")
    host, t = fleet.hosts["confonly"], fleet.targets["confonly"]
    assert run_deploy(fleet, ["confonly"])["confonly"].ok
    config, before = host.read("/etc/hoststack/kvmagent.toml"), dict(fleet.coordinator.hellos[t.host_uuid])
    nowhere = fleet.coordinator.agent_url.rsplit(":", 1)[0] + ":9"
    r = deploy_apart("kvmagent", [t], nowhere, admin_token=fleet.admin_token, api_url=fleet.coordinator.api_url,
                     settings=fleet.settings.model_copy(update={"connected_timeout": 15}))["confonly"]
    assert (r.ok, r.task, r.tasks) == (False, "wait connected", ["probe", "config", "service", "wait connected",
                                                                 "rollback"]), r
    assert r.message.startswith("confonly: wait connected: agent did not report Connected within 15s; its service: "
                                "supervisor running: "), r.message
    assert r.message.endswith("Connection refused>; the agent did not come up with its new config, so the config it "
                              "had before is put back; it was restored and is running (Connected)"), r.message
    assert host.read("/etc/hoststack/kvmagent.toml") == config
    assert host.read("/etc/hoststack/kvmagent.toml.previous") is None
    hello = fleet.coordinator.hellos[t.host_uuid]  # the restored agent's own: a new process, a new session
    assert hello["session"] != before["session"] and hello["pid"] != before["pid"] and time.time() - hello["at"] < 3


def test_an_upgrade_whose_agent_does_not_come_up_is_rolled_back(fleet, run):
    """A new version with a config its agent cannot work with (a coordinator URL where nothing listens): before, the
    host was left with neither agent connected; now the previous venv and config are back, and that agent runs."""
    fleet.add("rollback")
    host, t = fleet.hosts["rollback"], fleet.targets["rollback"]
    assert run_deploy(fleet, ["rollback"])["rollback"].ok
    old, old_venv = current_version(fleet.settings), host.sh("readlink", "/opt/hoststack/kvmagent/current").stdout
    config, stamp = host.read("/etc/hoststack/kvmagent.toml"), host.read("/var/lib/hoststack/deploy/kvmagent.json")
    settings = fleet.settings.model_copy(update={"source_dir": agent_source(run.path("src-broken"), "99.1.0"),
                                                 "connected_timeout": 15})
    nowhere = fleet.coordinator.agent_url.rsplit(":", 1)[0] + ":9"
    r = deploy_apart("kvmagent", [t], nowhere, admin_token=fleet.admin_token, api_url=fleet.coordinator.api_url,
                     settings=settings)["rollback"]
    assert (r.ok, r.task, r.tasks[-2:]) == (False, "wait connected", ["wait connected", "rollback"]), r
    assert r.message.startswith("rollback: wait connected: agent did not report Connected within 15s; its service: "
                                "supervisor running: "), r.message
    assert r.message.endswith(f"Connection refused>; the new version 99.1.0 did not come up, so the previous version "
                              f"{old} ({old_venv.strip()}) is put back; it was restored and is running (Connected)")
    assert host.sh("readlink", "/opt/hoststack/kvmagent/current").stdout == old_venv
    assert (host.read("/etc/hoststack/kvmagent.toml"), host.read("/var/lib/hoststack/deploy/kvmagent.json")) == (
        config, stamp)  # the next deploy redoes every step
    assert host.read("/etc/hoststack/kvmagent.toml.previous") is None
    hello = fleet.coordinator.hellos[t.host_uuid]
    assert (hello["version"], hello["wheel"]) == (old, old) and time.time() - hello["at"] < 3
    r = run_deploy(fleet, ["rollback"], settings=settings.model_copy(update={"connected_timeout": 60}))["rollback"]
    assert (r.ok, r.tasks) == (True, ["probe", "upload", "install", "service", "wait connected", "clean up"]), r
    assert fleet.coordinator.hellos[t.host_uuid]["version"] == "99.1.0"
    venvs = host.sh("ls", "/opt/hoststack/kvmagent").stdout.split()
    assert [v for v in venvs if v.startswith("venv-")] == [host.sh("readlink", "/opt/hoststack/kvmagent/current")
                                                           .stdout.strip()] != [old_venv.strip()]
    assert host.read("/etc/hoststack/kvmagent.toml.previous") is None
