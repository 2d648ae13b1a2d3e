"""Automatic deploys decided and batched (leader/autodeploy.py), the deployer child faked; HostWatch's hook."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from agentkit.tls import TlsSettings
from coordinator.domain.hosts import Host, SshCredentials, seal_ssh
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Txn
from coordinator.leader import autodeploy
from coordinator.leader import hostwatch as background
from coordinator.settings import CoordinatorSettings

SETTINGS = CoordinatorSettings(admin_token="a" * 24, coordinator_url_for_agents="http://198.18.0.1:8740",
                               deploy_backoff=60, port=8741, secret_key="aGVsbG8taG9zdHN0YWNrLWNyZWRlbnRpYWwta2V5LTE=",
                               auto_upgrade_with_password=True,  # these hosts' credentials are passwords
                               tls=TlsSettings(plain_http=True))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Deployer:
    """Stands in for `python -m deployer`: records requests, answers per host from `fail`."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.fail: set[str] = set()
        self.called = asyncio.Event()

    async def __call__(self, request: dict) -> dict:
        self.requests.append(request)
        self.called.set()
        return {t["name"]: {"ok": t["name"] not in self.fail,
                            "message": f"{t['name']}: " + ("probe: ssh: authentication failed"
                                                           if t["name"] in self.fail else "deployed 0.1.0")}
                for t in request["targets"]}


def host(name: str, version: str | None = "0.0.9", password: str | None = "pw", kind: str = "kvm") -> Host:
    """A host record; `version` None: registered, its agent never connected."""
    return Host(uuid=f"u-{name}", name=name, address=f"198.18.0.{len(name) + 10}", kind=kind, token_sha256="",
                created=0.0, agent_version=version,
                ssh_secret=seal_ssh(SETTINGS, SshCredentials(password=password)) if password else None)


@pytest.fixture
async def upgrader(monkeypatch):
    monkeypatch.setattr(autodeploy, "BATCH_WINDOW", 0.05)
    deployer, clock = Deployer(), Clock()
    u = autodeploy.AutoDeployer(SETTINGS, "0.1.0", runner=deployer, clock=clock)
    task = asyncio.create_task(u.run())
    yield u, deployer, clock
    task.cancel()


async def settle(u: autodeploy.AutoDeployer, deployer: Deployer, calls: int) -> None:
    for _ in range(100):
        if len(deployer.requests) >= calls and not u.busy and not u.pending:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(deployer.requests)} deployer runs, wanted {calls}")


async def test_hosts_reconnecting_together_are_upgraded_once_in_one_batch(upgrader):
    u, deployer, _ = upgrader
    a, b = host("kvm-a"), host("kvm-b")
    for _ in range(3):  # HostWatch asks every tick
        await u.request(a)
        await u.request(b)
    await settle(u, deployer, 1)
    await u.request(a)
    await asyncio.sleep(0.2)
    assert len(deployer.requests) == 1
    req = deployer.requests[0]
    assert req["agent"] == "kvmagent" and req["coordinator_url"] == "http://198.18.0.1:8740"
    assert req["api_url"] == "http://127.0.0.1:8741" and req["admin_token"] == SETTINGS.admin_token.get_secret_value()
    assert [(t["name"], t["host_token"], t["user"], t["password"]) for t in req["targets"]] == [
        ("kvm-a", None, "root", "pw"), ("kvm-b", None, "root", "pw")]


async def test_a_failing_upgrade_backs_off_and_new_credentials_retry_at_once(upgrader):
    u, deployer, clock = upgrader
    deployer.fail.add("kvm-a")
    a = host("kvm-a")
    await u.request(a)
    await settle(u, deployer, 1)
    for _ in range(20):  # a second of HostWatch ticks: no hot loop
        await u.request(a)
    await asyncio.sleep(0.2)
    assert len(deployer.requests) == 1
    clock.now += 61
    await u.request(a)
    await settle(u, deployer, 2)
    clock.now += 61  # the second failure waits twice as long
    await u.request(a)
    await asyncio.sleep(0.2)
    assert len(deployer.requests) == 2 and u.attempts["u-kvm-a"].failures == 2
    deployer.fail.clear()
    fixed = a.model_copy(update={"ssh_secret": seal_ssh(SETTINGS, SshCredentials(password="right"))})
    await u.request(fixed)
    await settle(u, deployer, 3)
    assert deployer.requests[-1]["targets"][0]["password"] == "right"
    u.retain({"u-kvm-a"})
    assert set(u.attempts) == {"u-kvm-a"}
    u.retain(set())  # deleted: hosts come and go while a leader runs for months
    assert u.attempts == {}


async def test_a_version_the_host_reports_anew_waits_the_back_off_after_its_last_deploy(upgrader):
    """What a host reports is its own choice: one that flaps between versions (two agents of its token running, or
    a host taken over) had the coordinator deploy to it back to back, each deploy restarting its agent."""
    u, deployer, clock = upgrader
    a = host("kvm-a", version="0.0.9")
    await u.request(a)
    await settle(u, deployer, 1)
    for version in ("0.0.8", "0.0.7", "0.0.8"):
        await u.request(a.model_copy(update={"agent_version": version}))
        await asyncio.sleep(0.1)
    assert len(deployer.requests) == 1
    clock.now += 61
    await u.request(a.model_copy(update={"agent_version": "0.0.8"}))
    await settle(u, deployer, 2)


async def test_ssh_host_keys_recorded_after_a_failure_are_tried_at_once(upgrader):
    u, deployer, _ = upgrader
    deployer.fail.add("mon-a")  # e.g. no SSH host key recorded
    a = host("mon-a", version=None, kind="ceph")
    await u.request(a)
    await settle(u, deployer, 1)
    await u.request(a)
    await asyncio.sleep(0.2)
    assert len(deployer.requests) == 1
    deployer.fail.clear()
    await u.request(a.model_copy(update={"ssh_host_keys": ["ssh-ed25519 AAAA"]}))
    await settle(u, deployer, 2)
    assert deployer.requests[-1]["targets"][0]["ssh_host_keys"] == ["ssh-ed25519 AAAA"]


async def test_hosts_without_credentials_are_reported_once(upgrader, caplog):
    u, deployer, _ = upgrader
    with caplog.at_level(logging.WARNING, logger="coordinator.leader.autodeploy"):
        for _ in range(5):
            await u.request(host("kvm-c", password=None))
    await asyncio.sleep(0.2)
    assert deployer.requests == []
    assert [r.getMessage() for r in caplog.records if "no SSH credentials" in r.getMessage()] == [
        "host kvm-c runs kvmagent 0.0.9, the coordinator is 0.1.0, but it has no SSH credentials to upgrade it with "
        "(hs deploy ssh kvm-c ...)"]


async def test_each_kind_of_host_gets_its_agent_in_one_deploy_per_agent(upgrader):
    u, deployer, _ = upgrader
    for h in (host("kvm-new", version=None), host("mon-a", kind="ceph"), host("mon-b", version=None, kind="ceph")):
        await u.request(h)
    await settle(u, deployer, 2)
    assert sorted((r["agent"], [t["name"] for t in r["targets"]]) for r in deployer.requests) == [
        ("cephagent", ["mon-a", "mon-b"]), ("kvmagent", ["kvm-new"])]
    assert all(r["holder"] == "the coordinator (" + SETTINGS.replica_id + ", automatic deploy)"
               for r in deployer.requests)


def test_upgrades_need_a_url_for_agents():
    assert autodeploy.from_settings(SETTINGS, "0.1.0") is not None
    assert autodeploy.from_settings(SETTINGS.model_copy(update={"coordinator_url_for_agents": None}), "0.1.0") is None
    assert autodeploy.from_settings(SETTINGS.model_copy(update={"auto_deploy": False}), "0.1.0") is None


class Snapshots:
    """The two store calls HostWatch makes, over fixed hosts and heartbeats."""

    def __init__(self, hosts: list[Host], alive: dict[str, float]):
        self.data = {keys.HOSTS: [Entry(keys.host(h.uuid), h.record(), 1, 1) for h in hosts],
                     keys.ALIVE: [Entry(keys.alive(u), {"at": at}, 1, 1) for u, at in alive.items()],
                     keys.HOST_STATE: []}

    async def snapshot(self, prefixes: list[str]) -> tuple[dict, int]:
        return {p: list(self.data[p]) for p in prefixes}, 1

    async def commit(self, txn: Txn) -> int:
        """A host's state, recorded (the host records never change here: its guard holds)."""
        for put in txn.puts():
            key = put.key.decode()
            self.data[keys.HOST_STATE] = [e for e in self.data[keys.HOST_STATE] if e.key != key]
            self.data[keys.HOST_STATE].append(Entry(key, json.loads(put.value), 1, 1))
        return 1


async def test_hostwatch_asks_every_tick_for_old_agents_and_new_hosts_with_credentials():
    now = time.time()
    hosts = [host("old"), host("same", version="0.1.0"), host("gone"), host("fresh", version=""),
             host("new", version=None), host("new-nossh", version=None, password=None)]
    store = Snapshots(hosts, {"u-old": now, "u-same": now, "u-fresh": now, "u-gone": now - 3600})
    asked: list[str] = []
    told: list[set[str]] = []

    class Deploys:
        async def request(self, h: Host) -> None:
            asked.append(h.name)

        def retain(self, hosts: set[str]) -> None:
            told.append(hosts)

    watch = background.HostWatch(store, SETTINGS, "0.1.0", Deploys())
    await watch.tick()
    await watch.tick()  # no transition the second time: still asked (the deployer decides)
    assert asked == ["old", "new", "old", "new"] and watch.transitions == 6
    assert told == [{h.uuid for h in hosts}] * 2


async def test_a_hosts_report_never_gets_a_stored_password_sent_to_it(monkeypatch, caplog):
    monkeypatch.setattr(autodeploy, "BATCH_WINDOW", 0.05)
    deployer = Deployer()
    u = autodeploy.AutoDeployer(SETTINGS.model_copy(update={"auto_upgrade_with_password": False}), "0.1.0",
                                runner=deployer, clock=Clock())
    task = asyncio.create_task(u.run())
    try:
        old = host("kvm-old")  # reports 0.0.9: an upgrade, asked for by what the host says
        keyed = old.model_copy(update={"uuid": "u-keyed", "name": "kvm-keyed", "ssh_secret": seal_ssh(
            SETTINGS, SshCredentials(key_file="/etc/hoststack/deploy-key"))})
        # a key and a password stored: its sshd (the host's own, if taken over) could refuse the key, and ssh
        # would then offer the password; an upgrade logs in with the key alone
        both = old.model_copy(update={"uuid": "u-both", "name": "kvm-both", "ssh_secret": seal_ssh(
            SETTINGS, SshCredentials(key_file="/etc/hoststack/deploy-key", password="pw"))})
        new = host("kvm-new", version=None)  # never ran an agent: its first deploy may use the password
        for h in (old, keyed, both, new):
            await u.request(h)
        await settle(u, deployer, 1)
        assert sorted((t["name"], t["password"], t["key_file"]) for r in deployer.requests for t in r["targets"]) == [
            ("kvm-both", None, "/etc/hoststack/deploy-key"), ("kvm-keyed", None, "/etc/hoststack/deploy-key"),
            ("kvm-new", "pw", None)]
        assert "kvm-old runs kvmagent 0.0.9" in caplog.text and "not upgraded automatically" in caplog.text
    finally:
        task.cancel()
