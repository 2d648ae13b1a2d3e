"""A control node from `hs-ctl install`, and its backups and restore, on an sshd target in a namespace.

The controller runs this tree's `hs-ctl install --host` through the deployer (as `hs deploy` does) onto a
fresh target (testbed/sshd.py); PID 1 is not systemd here, so the node's etcd, coordinator and console proxy run under
the supervisor loops install writes. Everything on the node is then done with the installed `hs-ctl`,
run inside the target as an operator would. The test reaches the node's API through a portal from a
loopback port into the target's namespace; a real KVM host (testbed/kvmhost.py, its kvmagent kept to the
capabilities of its systemd unit) reaches it the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentkit import __version__
from coordinator.client import ApiClientError, Client
from coordinator.ctl import schedule
from deployer.service import KVMAGENT_CAPABILITIES
from testbed import guest_image, sandbox
from testbed.coordinators import bed_file_roots
from testbed.deploylab import agent_source
from testbed.kvmhost import KvmHost
from testbed.netns import Run
from testbed.pki import refuses_plain_http
from testbed.ports import free_port
from testbed.sshd import SshLab, SshTarget
from testbed.switch import Switch

pytestmark = pytest.mark.real
HS_CTL = "/opt/hoststack/coordinator/current/bin/hs-ctl"
BACKUPS = "/var/backups/hoststack"
PKI = "/etc/hoststack/pki"  # etcd takes TLS clients with a certificate of the node's CA only
ETCDCTL = ("etcdctl", "--endpoints=https://127.0.0.1:2379", f"--cacert={PKI}/ca.pem", f"--cert={PKI}/etcd-client.pem",
           f"--key={PKI}/etcd-client-key.pem")
ETCD_ROOT = "/etc/hoststack/etcd-root.toml"  # etcd's root password: root's file only


@dataclass
class Node:
    lab: SshLab
    target: SshTarget
    env: dict[str, str]
    first: subprocess.CompletedProcess[str]
    token: str
    port: int  # a loopback port of this namespace that leads to the node's API
    ca: Path | None = None  # the CA that verifies the node's API (testbed.kvmhost.Reachable)

    def command(self, verb: str = "install", options: Sequence[str] = ()) -> list[str]:
        """`hs-ctl install` (or upgrade) from this tree with `options`; VMs may name files where the test bed
        keeps them."""
        roots = [a for root in bed_file_roots() for a in ("--file-root", root)]
        keys = [a for key in self.lab.host_keys for a in ("--ssh-host-key", key)]  # the operator knows the node's
        return [sys.executable, "-m", "coordinator.ctl.main", verb, "--host", self.target.address, *keys, *roots,
                *options]

    def install(self, verb: str = "install", env: dict[str, str] | None = None, options: Sequence[str] = ()
                ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(verb, options), env=env or self.env, capture_output=True, text=True,
                              timeout=600)

    def ctl(self, *args: str, ok: bool = True, writable: Sequence[str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        """The node's hs-ctl as an operator's login shell (or cron) runs it: a plain environment; with
        `writable`, in the file-system sandbox of a unit that leaves those writable (testbed.sandbox)."""
        command = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", HS_CTL, *args]
        p = self.target.sh(*(command if writable is None else sandbox.argv(writable, command)), rcs=(0, 1),
                           timeout=300)
        assert not ok or p.returncode == 0, p.stdout + p.stderr
        return p

    def api(self) -> Client:
        return Client(f"https://127.0.0.1:{self.port}", self.token, ca=self.ca)

    def pid(self, service: str) -> str:
        return self.target.sh("cat", f"/run/hoststack/{service}.pid").stdout.strip()

    def etcdctl(self, *args: str, user: str | None = None, config: str = "") -> subprocess.CompletedProcess[str]:
        """etcdctl on the node with its client certificate, as `user` with the password from `config` (a
        file of the node), or as no user at all."""
        login: tuple[str, ...] = ()
        if user:
            password = tomllib.loads(self.target.read(config) or "")["etcd_password"]
            login = ("env", f"ETCDCTL_USER={user}", f"ETCDCTL_PASSWORD={password}")
        return self.target.sh(*login, *ETCDCTL, *args, rcs=(0, 1))


def _token(out: str) -> str:
    m = re.search(r"^admin token: (\S+)$", out, re.M)
    assert m, out
    return m.group(1)


@pytest.fixture(scope="module")
def node(run: Run) -> Node:
    lab = SshLab(run)
    target = lab.target("cn1")
    config = run.path("deployer.toml")
    values = {"ssh_executable": str(lab.ssh_executable), "known_hosts": str(lab.known_hosts),
              "control_path_dir": str(run.path("cp")), "refresh_index": False}
    config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    env = {**os.environ, "HS_DEPLOYER_CONFIG": str(config), "HS_CTL_SSH_PASSWORD": target.password,
           "HS_CTL_CONFIG": "/nonexistent"}
    port = free_port()
    n = Node(lab, target, env, subprocess.CompletedProcess([], 0, "", ""), "", port)
    n.first = n.install()
    assert n.first.returncode == 0, n.first.stdout + n.first.stderr
    n.token = _token(n.first.stdout)
    n.ca = run.path("cn1-ca.pem")  # what the operator copies from the node for `hs --ca` (and the test bed)
    n.ca.write_text(target.read("/etc/hoststack/pki/ca.pem") or "")
    run.popen([sys.executable, "-m", "testbed.portal", "--into", target.ns.name, str(port), "8740", target.address],
              log_name="portal-cn1")
    return n


async def test_install_runs_etcd_and_the_coordinator_reachable_with_the_printed_token(node: Node):
    assert "control node 198.18." in node.first.stdout and "installed" in node.first.stdout
    deadline = time.monotonic() + 10
    while True:
        try:
            async with node.api() as api:
                leader = await api.get("/v1/leader")
            break
        except OSError:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    assert leader["leader"] == leader["this_replica"]
    assert refuses_plain_http("127.0.0.1", node.port)  # the API over TLS only, with a certificate of the node's CA
    async with Client(f"https://127.0.0.1:{node.port}", "not-the-admin-token", ca=node.ca) as api:
        with pytest.raises(ApiClientError) as e:
            await api.get("/v1/hosts")
    assert e.value.status == 401
    status = node.ctl("status").stdout
    assert "etcd: running\ncoordinator: running\nconsoleproxy: running\n" in status and "leads" in status, status
    assert "data schema 1" in status and "scheduled backups: /etc/cron.d/hoststack-backup" in status
    cfg = json.loads(node.target.read("/etc/hoststack/etcd.json") or "{}")
    assert (cfg["data-dir"], cfg["auto-compaction-mode"], cfg["quota-backend-bytes"], cfg["enable-v2"]) == \
        ("/var/lib/hoststack/etcd/data", "periodic", 8 << 30, False)
    assert node.target.sh("stat", "-c", "%U %a", "/var/lib/hoststack/etcd").stdout.split() == ["etcd", "700"]
    etcd = node.pid("etcd")  # the supervisor runs etcd as its own user
    child = node.target.sh("pgrep", "-P", etcd).stdout.split()[0]
    assert node.target.sh("ps", "-o", "user=", "-p", child).stdout.strip() == "etcd"
    cron = node.target.read("/etc/cron.d/hoststack-backup") or ""
    assert f"30 0,12 * * * root {HS_CTL} backup --keep-amount 14" in cron
    # the node's own deployer (automatic agent deploys) builds from the release's source, shipped with it
    version = node.target.sh("/opt/hoststack/coordinator/current/bin/python", "-c", "from deployer.deploy import "
                             "current_version, load_settings; print(current_version(load_settings()))")
    assert version.stdout.strip() == __version__
    # the console proxy, registered at the node's coordinator by the install, connects to it
    await _until("the node's console proxy is Connected", lambda: _proxy(node, Connected=__version__))
    assert "register console proxy" in node.first.stdout
    cfg = node.target.read("/etc/hoststack/consoleproxy.toml") or ""
    assert 'coordinator_url = "https://127.0.0.1:8740"' in cfg and 'tls = {ca = "/etc/hoststack/pki/ca.pem"}' in cfg
    assert node.target.sh("stat", "-c", "%a", "/etc/hoststack/consoleproxy.toml").stdout.strip() == "600"


def test_the_nodes_deployer_builds_an_agents_wheelhouse_from_the_wheels_install_shipped(run: Run, node: Node):
    """The coordinator's automatic deploys build an agent's wheelhouse on the node, which may reach no package
    index and has no compiler (kvmagent's libvirt-python has no wheel on PyPI). The node's deployer, with the
    settings install wrote and none of pip's own (this machine's pip finds wheels of its own), builds one into
    an empty cache from the wheels the release brought, byte for byte; before, it asked an index for them."""
    cache = run.path("node-deployer-cache")
    build = ("from deployer import wheelhouse; from deployer.deploy import AGENTS, load_settings; s = load_settings(); "
             "print(wheelhouse.build(AGENTS['kvmagent'], s.source_dir, s.cache_dir, s.index()).tar)")
    p = node.target.sh("env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "PIP_CONFIG_FILE=/dev/null",
                       f"HS_DEPLOYER_CACHE_DIR={cache}", "/opt/hoststack/coordinator/current/bin/python", "-c", build,
                       rcs=(0, 1), timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    with tarfile.open(p.stdout.strip()) as tar:  # the cache is outside the target's overlays: readable here
        wheels = {m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest()  # type: ignore[union-attr]
                  for m in tar.getmembers()}
    deps = {name: digest for name, digest in wheels.items() if not name.startswith("hoststack-")}
    assert any(name.startswith("libvirt_python-") for name in deps) and len(wheels) == len(deps) + 1, sorted(wheels)
    sums = node.target.sh("sh", "-c", "cd /opt/hoststack/coordinator/source/wheels && sha256sum *").stdout
    shipped = {name: digest for digest, name in (line.split() for line in sums.splitlines())}
    assert {name: shipped.get(name) for name in deps} == deps


async def test_a_host_added_with_credentials_is_deployed_by_the_nodes_coordinator(node: Node):
    """End to end on the node: its coordinator's deploy child runs from the node's venv with the settings install
    wrote, reaches the host over SSH from the node, and the real kvmagent (it connects before a libvirtd
    answers, and none does here) comes up Connected to the node with the node's release. (Its wheelhouse comes
    from the cache the target's overlay shares with this machine; building one from the shipped wheels alone is
    the test above.)"""
    host = node.lab.target("kvm-auto", password=node.target.password)
    async with node.api() as api:
        uuid = (await api.post("/v1/hosts", {"name": "kvm-auto", "address": host.address, "ssh_host_keys": list(
            node.lab.host_keys), "ssh": {"password": host.password}}))["uuid"]

    async def connected() -> bool:
        async with node.api() as api:
            h = await api.get(f"/v1/hosts/{uuid}")
        return (h["state"], h["agent_version"]) == ("Connected", __version__)
    await _until("the node's coordinator deployed kvm-auto and its agent connected", connected, timeout=240)
    done = f"agent deploy: kvm-auto: deployed {__version__}"  # logged once the deploy saw the agent connect
    await _until("the node's coordinator logged the deploy",
                 lambda: done in (node.target.read("/var/log/hoststack/coordinator.log") or ""))
    cfg = tomllib.loads(host.read("/etc/hoststack/kvmagent.toml") or "")
    assert (cfg["coordinator_url"], cfg["host_uuid"]) == (f"https://{node.target.address}:8740", uuid)
    # It keeps running: its API's certificate obtained from the node, and no task of it crashed (it crashed at
    # each try with the host's python3-cryptography, older than ours, when its venv did not have its own).
    log = "/var/log/hoststack/kvmagent.log"
    await _until("kvm-auto's agent got its certificate", lambda: "new TLS certificate" in (host.read(log) or ""))
    assert "crashed" not in (host.read(log) or "")


def test_etcd_refuses_a_client_without_a_user_and_the_coordinators_user_has_hoststacks_prefix_only(node: Node):
    anonymous = node.etcdctl("get", "/hs/", "--prefix", "--keys-only")  # the node's own client certificate
    assert anonymous.returncode == 1 and "permission denied" in anonymous.stderr, anonymous
    assert node.etcdctl("put", "/hs/x", "1").returncode == 1
    coordinator = "/etc/hoststack/coordinator.toml"
    assert node.etcdctl("get", "/hs/schema", user="hoststack", config=coordinator).returncode == 0
    outside = node.etcdctl("put", "/elsewhere", "x", user="hoststack", config=coordinator)
    assert outside.returncode == 1 and "permission denied" in outside.stderr, outside
    assert node.etcdctl("user", "list", user="hoststack", config=coordinator).returncode == 1  # not root
    assert node.target.sh("stat", "-c", "%U %a", ETCD_ROOT).stdout.split() == ["root", "600"]
    assert node.etcdctl("user", "list", user="root", config=ETCD_ROOT).stdout.split() == ["hoststack", "root"]
    root_password = tomllib.loads(node.target.read(ETCD_ROOT) or "")["etcd_password"]
    assert root_password not in (node.target.read(coordinator) or "")  # not the coordinator's to know
    assert node.etcdctl("role", "get", "hoststack", user="root", config=ETCD_ROOT).stdout.count("(prefix /hs/)") == 2


async def _proxy(node: Node, **state_version: str) -> bool:
    """The node's one console proxy is in that state with that version (`Connected="0.1.0"`)."""
    async with node.api() as api:
        proxies = (await api.get("/v1/console-proxies"))["console_proxies"]
    return [(p["state"], p["agent_version"]) for p in proxies] == list(state_version.items())


def _state(node: Node) -> str:
    files = ["/etc/hoststack/etcd.json", "/etc/hoststack/coordinator.toml", "/etc/hoststack/consoleproxy.toml",
             ETCD_ROOT,
             "/etc/cron.d/hoststack-backup", "/var/lib/hoststack/deploy/controlnode.json",
             "/opt/hoststack/coordinator/current"]
    return node.target.sh("stat", "-c", "%i %Y", *files).stdout + "".join(map(node.pid, ("etcd", "coordinator",
                                                                                       "consoleproxy")))


def test_a_second_install_changes_nothing_in_one_round_trip(node: Node):
    calls, before = node.lab.ssh_calls(node.target), _state(node)
    again = node.install()
    assert again.returncode == 0, again.stderr
    assert "control node 198.18." in again.stdout and ": unchanged" in again.stdout
    assert _token(again.stdout) == node.token
    assert node.lab.ssh_calls(node.target) - calls == 1
    assert _state(node) == before


def test_keep_amount_keeps_the_newest_backups_each_with_its_checksum(node: Node):
    """As the timer's unit runs them: in its sandbox, where all but the backups and a private /tmp is read-only."""
    timer = (str(schedule.Job().backup_dir), "/tmp")
    made = [node.ctl("backup", "--file-name", "keep", "--keep-amount", "3", writable=timer).stdout.split()[1]
            for _ in range(5)]
    refused = node.ctl("backup", "--file-name", "keep", writable=("/tmp",), ok=False)  # a unit that forgot them
    assert re.fullmatch(rf"hs-ctl: writing {BACKUPS}/keep-\S+\.db\.part: Read-only file system; no backup was kept",
                        refused.stderr.splitlines()[-1]) and refused.returncode == 1, refused.stderr  # (the sandbox's
    # own lines before it name mounts it leaves as they are)
    left = node.target.sh("ls", BACKUPS).stdout.split()
    assert sorted(p for p in left if p.startswith("keep-")) == sorted(
        name for p in made[2:] for name in (os.path.basename(p), os.path.basename(p) + ".sha256"))
    checked = node.target.sh("sh", "-c", f"cd {BACKUPS} && sha256sum -c keep-*.sha256").stdout
    assert checked.count(": OK") == 3


def test_a_damaged_backup_is_refused_before_anything_is_touched(node: Node):
    path = node.ctl("backup", "--file-name", "damaged", "--keep-amount", "1").stdout.split()[1]
    before = node.target.sh("stat", "-c", "%i", "/var/lib/hoststack/etcd/data").stdout, node.pid("etcd")
    node.target.sh("sh", "-c", f"printf 'X' | dd of={path} bs=1 seek=4096 conv=notrunc status=none")
    refused = node.ctl("restore", path, ok=False)
    assert refused.returncode == 1
    assert re.fullmatch(rf"hs-ctl: {re.escape(path)}: checksum mismatch: \S+ says [0-9a-f]{{64}}, the file is "
                        r"[0-9a-f]{64} \(damaged or not this backup\); nothing was changed\n", refused.stderr)
    node.target.sh("sh", "-c", f"head -c 100000 /dev/urandom > {path} && sha256sum {path} > {path}.sha256")
    foreign = node.ctl("restore", path, ok=False)
    assert foreign.stderr.endswith("not an etcd snapshot (its embedded sha256 does not match); nothing was changed\n")
    after = node.target.sh("stat", "-c", "%i", "/var/lib/hoststack/etcd/data").stdout, node.pid("etcd")
    assert after == before
    assert not node.target.sh("sh", "-c", "ls -d /var/lib/hoststack/etcd/data.* 2>/dev/null", rcs=(0, 2)).stdout


async def test_services_stop_and_start_in_order_each_waited_for(node: Node):
    before = {s: node.pid(s) for s in ("etcd", "coordinator", "consoleproxy")}
    assert node.ctl("stop", "consoleproxy").stdout == "stop: consoleproxy\n"
    assert "\nconsoleproxy: not running\n" in node.ctl("status").stdout
    assert node.ctl("restart").stdout == "restart: etcd, coordinator, consoleproxy\n"
    assert "etcd: running\ncoordinator: running\nconsoleproxy: running\n" in node.ctl("status").stdout
    after = {s: node.pid(s) for s in before}
    assert all(after[s] != before[s] for s in before), (before, after)
    await _until("the restarted console proxy is Connected again", lambda: _proxy(node, Connected=__version__))


def test_backup_schedule_rewrites_or_removes_the_cron_entry(node: Node):
    cron = "/etc/cron.d/hoststack-backup"
    installed = node.target.read(cron)
    assert node.ctl("backup-schedule", "--schedule", "15 3 * * *", "--keep-amount", "30").stdout == \
        f"backups at '15 3 * * *', keeping 30: cron ({cron})\n"
    assert f"15 3 * * * root {HS_CTL} backup --keep-amount 30" in (node.target.read(cron) or "")
    assert node.ctl("backup-schedule", "--disable").stdout == "no scheduled backups\n"
    assert node.target.read(cron) is None and "scheduled backups: none" in node.ctl("status").stdout
    refused = node.ctl("backup-schedule", "--schedule", "0 3 1 * 1", ok=False)
    assert refused.returncode == 1 and refused.stderr.startswith("hs-ctl: ") and node.target.read(cron) is None
    node.ctl("backup-schedule")  # the seed's schedule again, as install wrote it
    assert node.target.read(cron) == installed


def test_an_install_without_scheduled_backups_removes_the_cron_entry_and_a_second_changes_nothing(node: Node):
    cron = "/etc/cron.d/hoststack-backup"
    installed = node.target.read(cron)
    off = node.install(options=("--backup-schedule", "none"))
    assert off.returncode == 0 and ": unchanged" not in off.stdout, off.stdout + off.stderr
    assert node.target.read(cron) is None and "scheduled backups: none" in node.ctl("status").stdout
    calls = node.lab.ssh_calls(node.target)
    again = node.install(options=("--backup-schedule", "none"))
    assert again.returncode == 0 and ": unchanged" in again.stdout, again.stdout + again.stderr
    assert node.lab.ssh_calls(node.target) - calls == 1 and node.target.read(cron) is None
    assert node.install().returncode == 0 and node.target.read(cron) == installed  # the seed's schedule again


def test_install_makes_the_backup_dir_the_nodes_hs_ctl_settings_name_and_refuses_one_hs_ctl_would(node: Node):
    """hs-ctl's ctl.toml on the node, read by install's probe: the backup schedule is written after it (cron here,
    PID 1 is no systemd: the directory a timer's unit would let it write); a relative path stops the install."""
    ctl, site = "/etc/hoststack/ctl.toml", "/var/backups/hs-site"
    try:
        node.target.sh("sh", "-c", f"echo 'backup_dir = \"backups\"' > {ctl}")
        refused = node.install()
        assert refused.returncode == 1 and refused.stderr.splitlines()[-1] == (
            f"hs-ctl: {node.target.address}: hs-ctl's settings: config backup_dir='backups' from {ctl}: must be an "
            "absolute path (scheduled backups run in /)"), refused.stderr
        node.target.sh("sh", "-c", f"echo 'backup_dir = \"{site}\"' > {ctl}")
        moved = node.install()
        assert moved.returncode == 0 and ": unchanged" not in moved.stdout, moved.stdout + moved.stderr
        assert node.target.sh("stat", "-c", "%a %F", site).stdout == "700 directory\n"
    finally:
        node.target.sh("rm", "-f", ctl)
    assert node.install().returncode == 0


# Backup, wipe, restore with a real KVM host streaming from the node.

@pytest.fixture(scope="module")
def kvm(run: Run, node: Node):
    host = KvmHost(run, Switch(run), "kvm1")

    async def register() -> None:
        async with node.api() as api:
            await host.register(api)
    asyncio.run(register())
    host.start(node, capabilities=KVMAGENT_CAPABILITIES)
    yield host
    host.close()


async def _everything(api: Client) -> dict[str, list[dict]]:
    """Every object the API shows, field by field, sorted. What agents report live stays out but for a VM's
    state and a host's health: a host's last heartbeat, clock offset, facts (free memory) and agent session (each
    agent process has its own), when its health was reported, a VM's other observed details and DHCP leases."""
    out = {}
    for path, key in (("/v1/hosts", "hosts"), ("/v1/l2-networks", "l2_networks"), ("/v1/l3-networks", "l3_networks"),
                      ("/v1/vms", "vms"), ("/v1/eips", "eips"), ("/v1/global-configs", "configs")):
        found = (await api.get(path))[key]
        for obj in found:
            for live in ("last_heartbeat", "clock_offset", "facts", "agent_session", "leases"):
                obj.pop(live, None)
            if "observed" in obj:
                obj["observed"] = (obj["observed"] or {}).get("state")
            if "health" in obj:
                obj["health"] = (obj["health"] or {}).get("status")
        out[key] = sorted(found, key=lambda o: json.dumps(o, sort_keys=True))
    return out


async def _vm(api: Client, kvm: KvmHost, l3: dict, image: guest_image.GuestImage, name: str) -> dict:
    return await api.post("/v1/vms", {
        "name": name, "host_uuid": kvm.uuid, "l3_network_uuids": [l3["uuid"]],
        "kernel": {"kernel": str(image.kernel), "initrd": str(image.initrd), "cmdline": image.cmdline("hold")},
    }, wait="60")


def _domains(kvm: KvmHost) -> set[str]:
    return {u.replace("-", "") for u in kvm.libvirt.virsh("list", "--uuid").split()}


async def _until(what: str, cond, timeout: float = 60) -> None:  # noqa: ANN001
    """Until `cond()` (a bool, or a coroutine of one) holds."""
    deadline = time.monotonic() + timeout
    while not ((await got) if asyncio.iscoroutine(got := cond()) else got):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.3)


async def test_restore_brings_back_every_object_and_agents_converge_without_a_restart(run: Run, node: Node, kvm):
    image = guest_image.build()
    net = run.subnet()
    async with node.api() as api:
        l2 = await api.post("/v1/l2-networks", {"name": "flat", "physical_interface": "eth1"})
        l3 = await api.post("/v1/l3-networks", {
            "name": "flat", "l2_uuid": l2["uuid"], "cidr": str(net), "gateway": str(net[1]),
            "ip_ranges": [{"start": str(net[10]), "end": str(net[30])}], "services": ["DHCP"]})
        kept = await _vm(api, kvm, l3, image, "kept")
        assert kept["observed"]["state"] == "Running"
        before = await _everything(api)
        path = node.ctl("backup").stdout.split()[1]
        lost = await _vm(api, kvm, l3, image, "after-backup")
        assert {kept["uuid"], lost["uuid"]} <= _domains(kvm)
        agent = kvm.agent.pid if kvm.agent else None
        assert node.etcdctl("del", "", "--from-key", user="root", config=ETCD_ROOT).returncode == 0
        assert (await api.get("/v1/vms"))["vms"] == []
        restored = node.ctl("restore", path).stdout
        assert restored.startswith(f"restored {path} (revision ") and "etcd is up" in restored, restored

        async def same() -> bool:
            try:
                return await _everything(api) == before
            except (ApiClientError, OSError):
                return False
        await _until("the API answers with the objects of the backup", same)
        await _until("the agent destroys the VM made after the backup and runs the other",
                     lambda: _domains(kvm) == {kept["uuid"]})
        assert kvm.agent is not None and kvm.agent.pid == agent and kvm.agent.poll() is None
        more = [await _vm(api, kvm, l3, image, f"new{i}") for i in range(2)]
        vms = (await api.get("/v1/vms"))["vms"]
    ips = [nic["ip"] for vm in vms for nic in vm["spec"]["nics"]]
    assert len(ips) == len(set(ips)) == 3, ips
    assert {vm["observed"]["state"] for vm in more} == {"Running"}


async def test_an_upgrade_backs_up_first_then_runs_the_new_release_on_the_same_data(run: Run, node: Node):
    same = node.install("upgrade")  # this release again: the backup, then nothing to change
    assert same.returncode == 0, same.stderr
    assert ": unchanged" in same.stdout and f"before the upgrade: backup {BACKUPS}/pre-upgrade-" in same.stdout
    async with node.api() as api:
        before = await _everything(api)
    nxt = agent_source(run.path("src-next"), "0.1.99", stub=False)
    config = run.path("deployer-next.toml")
    config.write_text(run.path("deployer.toml").read_text() + f'source_dir = "{nxt}"\n')
    up = node.install("upgrade", {**node.env, "HS_DEPLOYER_CONFIG": str(config)})
    assert up.returncode == 0, up.stdout + up.stderr
    assert "upgraded to 0.1.99 (upload, install, upload source, source, services)" in up.stdout, up.stdout
    assert _token(up.stdout) == node.token
    backups = node.target.sh("ls", BACKUPS).stdout.split()
    assert len([b for b in backups if b.startswith("pre-upgrade-") and b.endswith(".db")]) == 2

    for host in before["hosts"]:  # the console proxy runs from the node's venv: the new release
        if host["kind"] == "consoleproxy":
            host["agent_version"] = "0.1.99"

    async def upgraded() -> bool:
        try:
            async with node.api() as api:
                return (await api.get("/health"))["version"] == "0.1.99" and await _everything(api) == before
        except (ApiClientError, OSError):
            return False
    await _until("the new release serves the same objects, the console proxy upgraded with it", upgraded)
