"""The mons' cephagents (coordinator/domain/ceph/monhosts.py): which mons are registered as ceph hosts with their
monUrls' credentials, what the add waits for, and how it ends: Connected, the cause of a failed deploy, or where
each deploy is; the same request made again goes on and registers nobody twice."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentkit.errors import Invalid
from cephagent.errors import InvalidMonUrl
from cephagent.monurl import parse_list
from coordinator.domain import hosts
from coordinator.domain.ceph import monhosts, mons, storage
from coordinator.domain.ceph.errors import AgentDeployFailed, AgentsDeploying
from coordinator.domain.ceph.records import MonRecord, StorageRecord
from coordinator.domain.hosts import Host, HostStatus, SshCredentials
from coordinator.etcd import keys
from coordinator.etcd.store import Entry

from ..memstore import MemoryStore
from .standin import settings

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBfP1kWfXb6n8aFQ0rMkU0f2C6m5r0Pw5G8xXxYn3i0q"


def deploying(port: int = 1, token: str | None = None):  # noqa: ANN201
    """Settings of a coordinator that deploys agents (and, with `token`, knows agents deployed by hand)."""
    return settings(port, token).model_copy(update={"coordinator_url_for_agents": "http://198.18.0.1:8740"})


async def ceph_hosts(store: MemoryStore) -> list[Host]:
    return [h for h in await hosts.all_hosts(store) if h.kind == "ceph"]


async def log_deploy(store: MemoryStore, host: Host, task: str, phase: str, ok: bool | None, message: str = "") -> None:
    await store.put(f"{keys.deploy_log(host.uuid)}{time.time_ns():020d}",
                    {"host": host.name, "task": task, "phase": phase, "ok": ok, "message": message, "at": time.time()})


async def beat(store: MemoryStore, host: Host) -> None:
    await store.put(keys.alive(host.uuid), {"at": time.time(), "replica": "r1"})


def test_each_mon_host_counts_once_with_the_credentials_of_its_first_monurl():
    mons = parse_list(["root:a@10.0.0.1", "admin:b@10.0.0.1/?monPort=6790", "ops:c@10.0.0.2:2222"])
    wanted = monhosts.mon_hosts(mons, {"10.0.0.2": [KEY]})
    assert [(m.url.host, m.ssh) for m in wanted] == [
        ("10.0.0.1", SshCredentials(user="root", port=22, password="a")),
        ("10.0.0.2", SshCredentials(user="ops", port=2222, password="c"))]


def test_credentials_a_deploy_cannot_use_and_keys_of_no_mon_are_refused_without_the_password():
    with pytest.raises(InvalidMonUrl) as e:
        monhosts.mon_hosts(parse_list(["root:a@10.0.0.1", "bad user:s3cret@10.0.0.2"]), {})
    assert (e.value.status, e.value.code, e.value.field) == (400, "invalid_mon_url", "mon_urls")
    assert e.value.message.startswith("mon_urls[1]: ssh_username: String should match pattern")
    with pytest.raises(InvalidMonUrl, match=r"mon_urls\[0\]: ssh_password: String should have at most 1024") as e:
        monhosts.mon_hosts(parse_list([f"root:{'s' * 1025}@10.0.0.1"]), {})
    assert "s" * 20 not in e.value.message
    with pytest.raises(Invalid, match="10.0.0.9: no mon_server_ip of mon_urls") as unknown:
        monhosts.mon_hosts(parse_list(["root:a@10.0.0.1"]), {"10.0.0.9": [KEY]})
    assert (unknown.value.status, unknown.value.field) == (400, "ssh_host_keys")


def test_mon_hosts_are_named_for_their_address_and_numbered_when_the_name_is_taken():
    assert monhosts.host_name("10.0.0.1", set()) == "ceph-10.0.0.1"
    assert monhosts.host_name("fd00::1", set()) == "ceph-fd00--1"
    assert monhosts.host_name("10.0.0.1", {"ceph-10.0.0.1", "ceph-10.0.0.1-2"}) == "ceph-10.0.0.1-3"
    long = monhosts.host_name("a" * 70 + ".example", {"ceph-" + "a" * 58})
    assert long == "ceph-" + "a" * 56 + "-2" and len(long) == 63


def test_only_ceph_hosts_whose_agent_never_answered_are_waited_for():
    new = Host(uuid="u1", name="m1", address="10.0.0.1", kind="ceph", token_sha256="", created=0)
    assert monhosts.never_answered(HostStatus(new, None, "Disconnected"))
    assert not monhosts.never_answered(HostStatus(new, 1.0, "Connected"))
    down = new.model_copy(update={"agent_version": "1.0"})
    assert not monhosts.never_answered(HostStatus(down, 1.0, "Disconnected"))  # down: the add's agent_unreachable


def test_a_deploy_is_read_from_the_log_written_since_the_host_record_last_changed():
    host = Host(uuid="u1", name="ceph-10.0.0.1", address="10.0.0.1", kind="ceph", token_sha256="", created=0)
    record = Entry(keys.host("u1"), host.record(), mod_revision=10, create_revision=5)

    def entry(rev: int, task: str, phase: str, ok: bool | None, message: str = "") -> Entry:
        return Entry(f"{keys.deploy_log('u1')}{rev:020d}", {"host": host.name, "task": task, "phase": phase, "ok": ok,
                                                             "message": message}, rev, rev)

    def state(alive: object, *log: Entry) -> tuple[bool, bool, str]:
        d = monhosts.deploy_of(host, record, alive, list(log), 10, 1000)
        return d.connected, d.failed, d.state

    old_failure = entry(8, "probe", "after", False, "ssh: authentication failed")
    probing = entry(12, "probe", "before", None)
    assert state(None, old_failure) == (False, False, "its deploy has not started yet")  # credentials changed since
    assert state(None, old_failure, probing) == (False, False, "deploying, probe running")
    assert state(None, probing, entry(13, "probe", "after", True)) == (False, False, "deploying, probe done")
    failed = entry(14, "probe", "after", False, "ssh: authentication failed")
    assert state(None, failed, probing) == (False, True, "probe: ssh: authentication failed")  # by revision
    assert state({"at": 995}, old_failure) == (True, False, "Connected")
    gone = monhosts.deploy_of(host, None, None, [], 10, 1000)
    assert (gone.failed, str(gone)) == (True, "10.0.0.1 (host ceph-10.0.0.1): the host was deleted meanwhile")


async def test_nothing_is_registered_while_the_coordinator_deploys_no_agents():
    store = MemoryStore()
    await monhosts.ensure_agents(store, settings(1), parse_list(["root:pw@10.0.0.1"]), None, 0)
    assert await ceph_hosts(store) == []


async def test_a_new_mon_is_registered_once_and_named_with_where_its_deploy_is():
    store, s = MemoryStore(), deploying()
    mons = parse_list(["root:s3cret@127.0.0.1:2222/?monPort=6789", "root:s3cret@127.0.0.1/?monPort=6790"])
    for _ in range(2):  # the same request made again registers nobody twice
        with pytest.raises(AgentsDeploying) as e:
            await monhosts.ensure_agents(store, s, mons, {"127.0.0.1": [KEY]}, 0)
        assert (e.value.status, e.value.code, e.value.field) == (409, "agents_deploying", "mon_urls")
        assert e.value.message == (
            "the cephagents of 1 mon host(s) are not Connected yet (waited 0 s): 127.0.0.1 (host ceph-127.0.0.1): its "
            "deploy has not started yet. The same request made again goes on from here (hs host deploy-log HOST "
            "shows a host's deploy)")
    [host] = await ceph_hosts(store)
    assert (host.name, host.address, host.ssh_host_keys, host.agent_version) == (
        "ceph-127.0.0.1", "127.0.0.1", [KEY], None)
    assert hosts.open_ssh(s, host) == SshCredentials(user="root", port=2222, password="s3cret")
    await log_deploy(store, host, "install", "before", None)
    with pytest.raises(AgentsDeploying, match=r"\(host ceph-127.0.0.1\): deploying, install running"):
        await monhosts.ensure_agents(store, s, mons, None, 0)
    await beat(store, host)
    await monhosts.ensure_agents(store, s, mons, None, 0)
    assert len(await ceph_hosts(store)) == 1


async def test_the_add_waits_for_the_agents_to_connect():
    store, s = MemoryStore(), deploying()
    mons = parse_list(["root:pw@127.0.0.1"])
    with pytest.raises(AgentsDeploying):
        await monhosts.ensure_agents(store, s, mons, None, 0)
    [host] = await ceph_hosts(store)

    async def connects() -> None:
        await asyncio.sleep(0.3)
        await beat(store, host)

    task = asyncio.create_task(connects())
    started = time.monotonic()
    await monhosts.ensure_agents(store, s, mons, None, 5)
    assert 0.3 <= time.monotonic() - started < 2
    await task


async def test_a_failed_deploy_answers_its_cause_and_corrected_credentials_are_tried_again():
    store, s = MemoryStore(), deploying()
    with pytest.raises(AgentsDeploying):
        await monhosts.ensure_agents(store, s, parse_list(["root:wrong@127.0.0.1"]), None, 0)
    [host] = await ceph_hosts(store)
    await log_deploy(store, host, "probe", "before", None)
    await log_deploy(store, host, "probe", "after", False, "ssh: authentication failed")
    with pytest.raises(AgentDeployFailed) as e:
        await monhosts.ensure_agents(store, s, parse_list(["root:wrong@127.0.0.1"]), None, 30)  # no wait for a failure
    assert (e.value.status, e.value.code, e.value.field) == (400, "agent_deploy_failed", "mon_urls")
    assert e.value.message == ("the cephagent deploy failed on 127.0.0.1 (host ceph-127.0.0.1): probe: ssh: "
                               "authentication failed. Correct the monUrl (or the host: hs host deploy-log "
                               "ceph-127.0.0.1) and add again")
    assert "wrong" not in e.value.message
    with pytest.raises(AgentsDeploying, match="its deploy has not started yet"):
        await monhosts.ensure_agents(store, s, parse_list(["root:right@127.0.0.1"]), {"127.0.0.1": [KEY]}, 0)
    [again] = await ceph_hosts(store)
    assert (again.uuid, hosts.open_ssh(s, again).password, again.ssh_host_keys) == (host.uuid, "right", [KEY])
    with pytest.raises(AgentsDeploying):  # keys recorded are never replaced here
        await monhosts.ensure_agents(store, s, parse_list(["root:right@127.0.0.1"]), {"127.0.0.1": [OTHER_KEY]}, 0)
    assert (await ceph_hosts(store))[0].ssh_host_keys == [KEY]


async def test_a_key_file_and_a_host_whose_agent_answered_once_keep_their_credentials():
    store, s = MemoryStore(), deploying()
    keyed, _ = await hosts.register(store, s, "mon1", "127.0.0.1", "ceph", SshCredentials(key_file="/etc/hs/key"))
    down, _ = await hosts.register(store, s, "mon2", "127.0.0.2", "ceph", SshCredentials(password="old"))
    await hosts.update(store, down.uuid, lambda h: h.model_copy(update={"agent_version": "1.0"}))
    with pytest.raises(AgentsDeploying, match=r"1 mon host\(s\).*127.0.0.1 \(host mon1\)"):
        await monhosts.ensure_agents(store, s, parse_list(["root:pw@127.0.0.1", "root:new@127.0.0.2"]), None, 0)
    found = {h.name: hosts.open_ssh(s, h) for h in await ceph_hosts(store)}
    assert found == {"mon1": SshCredentials(key_file="/etc/hs/key"), "mon2": SshCredentials(password="old")}


async def test_a_mon_is_the_ceph_host_at_its_address_however_either_spells_it():
    """A monUrl that spells a ceph host's address otherwise names the same machine: it is not registered again."""
    store, s = MemoryStore(), deploying()
    await hosts.register(store, s, "mon1", "fd00::1", "ceph", SshCredentials(password="pw"))
    with pytest.raises(AgentsDeploying, match=r"1 mon host\(s\).*fd00::1 \(host mon1\)"):
        await monhosts.ensure_agents(store, s, parse_list(["root:pw@[fd00:0::1]"]), None, 0)
    assert [h.name for h in await ceph_hosts(store)] == ["mon1"]


async def test_a_mon_whose_agent_was_deployed_by_hand_is_left_as_it_is(stand_in):
    port = await stand_in("127.0.0.1")
    store = MemoryStore()
    await monhosts.ensure_agents(store, deploying(port, token="t" * 24), parse_list(["root:pw@127.0.0.1"]), None, 0)
    assert await ceph_hosts(store) == []
    with pytest.raises(AgentsDeploying):  # no agent answers there
        await monhosts.ensure_agents(store, deploying(port, token="t" * 24), parse_list(["root:pw@127.0.0.2"]), None,
                                     0)
    assert [h.address for h in await ceph_hosts(store)] == ["127.0.0.2"]


async def test_a_storage_whose_mons_agents_are_being_deployed_is_not_recorded():
    store = MemoryStore()
    with pytest.raises(AgentsDeploying):
        await storage.add(store, deploying(), "bs", "bs1", "default", ["root:pw@127.0.0.1"],
                          {"image": ("pool_name", None)}, wait=0)
    assert [k for k in store.kv if k.startswith("/hs/ceph/")] == []
    assert len(await ceph_hosts(store)) == 1


async def test_a_mon_added_to_a_storage_gets_its_agent_before_the_storage_changes():
    store = MemoryStore()
    rec = StorageRecord(uuid="b1", name="bs1", kind="bs", zone="default", fsid="f", pools={"image": "p"},
                        mons=[MonRecord(host="127.0.0.1", mon_port=6789, ssh_port=22, ssh_username="root",
                                        ssh_password="x")], created_at=1)
    await store.put(keys.ceph_storage("bs", "b1"), rec.model_dump())
    with pytest.raises(AgentsDeploying, match=r"127.0.0.2 \(host ceph-127.0.0.2\)"):
        await mons.add_mons(store, deploying(), "bs", "b1", ["root:pw@127.0.0.2"], wait=0)
    assert [h.address for h in await ceph_hosts(store)] == ["127.0.0.2"]
    assert (await store.get(keys.ceph_storage("bs", "b1"))).value == rec.model_dump()  # type: ignore[union-attr]
