"""The host record: its stored form, connection state, its SSH credentials at rest, its agent token's renewal,
the tokens of its agent's own API."""

from __future__ import annotations

import time

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from agentkit.errors import InUse, NotFound
from agentkit.model import HostFacts, stream_key_vm
from coordinator.domain import deploys, hosts
from coordinator.domain.credentials import CredentialError
from coordinator.domain.errors import Exists
from coordinator.domain.hosts import Host, SshCredentials
from coordinator.etcd import keys
from coordinator.etcd.store import Entry, Txn
from coordinator.fanout.credentials import HostCredentials
from coordinator.settings import CoordinatorSettings

from .cloud import cloud
from .memstore import MemoryStore

SETTINGS = CoordinatorSettings(admin_token="t" * 24, secret_key=Fernet.generate_key().decode())
STORED = {"uuid": "h1", "name": "kvm-1", "address": "198.18.0.2", "kind": "kvm", "token_sha256": "ab", "created": 1.0}


def test_the_stored_form_round_trips_and_leaves_absent_fields_absent():
    host = Host.model_validate(STORED)
    assert host.agent_version is None and host.facts is None and host.ssh_secret is None
    assert host.record() == STORED
    connected = host.model_copy(update={"facts": HostFacts(cpus=2), "agent_version": "0.1.0"})
    again = Host.model_validate(connected.record())
    assert again.facts == HostFacts(cpus=2) and again.agent_version == "0.1.0"


def test_fields_written_by_other_code_survive_a_rewrite():
    host = Host.model_validate({**STORED, "maintenance": True})
    assert host.model_copy(update={"agent_version": "0.2"}).record()["maintenance"] is True


def test_a_record_without_its_identity_is_refused():
    with pytest.raises(ValueError):
        Host.model_validate({k: v for k, v in STORED.items() if k != "kind"})


def test_a_host_is_connected_while_its_heartbeat_is_younger_than_the_timeout():
    assert hosts.state_of(100.0, 10, 109.9) == "Connected"
    assert hosts.state_of(100.0, 10, 110.0) == "Disconnected"
    assert hosts.state_of(None, 10, 0) == "Disconnected"
    assert hosts.state_of(109.9, 10, 100.0) == "Connected"  # stamped by a replica whose clock is a little ahead
    assert hosts.state_of(110.0, 10, 100.0) == "Disconnected"  # further: no heartbeat, or it would outlive the host
    assert hosts.state_of(32503680000.0, 10, 100.0) == "Disconnected"  # stamped in the year 3000
    alive = [Entry("/hs/alive/a", {"at": 100.0}, 1, 1), Entry("/hs/alive/b", {"at": 50}, 1, 1),
             Entry("/hs/alive/c", "junk", 1, 1)]
    assert hosts.connected(alive, 10, 105.0) == {"a"}
    assert hosts.beat_of({"at": 3}) == 3.0 and hosts.beat_of({"at": "3"}) is None


async def test_a_host_shows_how_far_its_agents_clock_is_off_and_one_past_the_tickets_skew_is_logged(caplog):
    store = MemoryStore()
    host, _ = await hosts.register(store, SETTINGS, "kvm-1", "198.18.0.2", "kvm", None)
    await hosts.heartbeat(store, host.uuid, "r1")  # an agent that sends no Date: nothing to show
    assert (await hosts.status(store, host.uuid, 10)).clock_offset is None
    await hosts.connect(store, host.uuid, HostFacts(), "r1", time.time() - 30)
    assert (await hosts.status(store, host.uuid, 10)).clock_offset in (-31, -30, -29) and not caplog.text
    await hosts.heartbeat(store, host.uuid, "r1", time.time() + 600)
    status = await hosts.status(store, host.uuid, 10)
    assert status.state == "Connected" and status.clock_offset in (599, 600, 601)
    await hosts.connect(store, host.uuid, HostFacts(), "r1", time.time() + 600)
    assert "host kvm-1: its clock is +600 s off this replica's" in caplog.text


async def test_a_connect_records_its_agents_session_which_a_reconnect_keeps_and_a_new_process_replaces():
    """What a deploy's wait compares: before, a stopped agent's last heartbeat looked like its successor's."""
    store = MemoryStore()
    host, _ = await hosts.register(store, SETTINGS, "kvm-1", "198.18.0.2", "kvm", None)
    assert (await hosts.load(store, host.uuid)).agent_session is None
    await hosts.connect(store, host.uuid, HostFacts(agent_version="0.1.0", agent_session="a" * 32), "r1")
    await hosts.connect(store, host.uuid, HostFacts(agent_version="0.1.0", agent_session="a" * 32), "r2")  # same one
    assert (await hosts.load(store, host.uuid)).agent_session == "a" * 32
    await hosts.connect(store, host.uuid, HostFacts(agent_version="0.1.0", agent_session="b" * 32), "r1")
    assert (await hosts.load(store, host.uuid)).agent_session == "b" * 32
    await hosts.connect(store, host.uuid, HostFacts(agent_version="0.0.9"), "r1")  # an agent older than sessions
    assert (await hosts.load(store, host.uuid)).agent_session is None


@pytest.mark.parametrize("session", ["", "short", "x" * 65, "a b" * 4, "../../../../"])
def test_a_session_that_is_no_token_is_refused_at_the_edge(session):
    with pytest.raises(ValueError, match="agent_session"):
        HostFacts(agent_session=session)


async def test_a_polled_agent_that_restarted_has_its_new_session_recorded_and_one_that_did_not_writes_no_record():
    store = MemoryStore()
    host, _ = await hosts.register(store, SETTINGS, "store-1", "198.18.0.2", "imagestore", None)
    entry = await store.get(keys.host(host.uuid))
    assert await hosts.answered(store, entry, "0.1.0", "r1", "a" * 32)  # its version is new
    entry = await store.get(keys.host(host.uuid))
    assert not await hosts.answered(store, entry, "0.1.0", "r1", "a" * 32)
    assert (await store.get(keys.host(host.uuid))).mod_revision == entry.mod_revision  # a heartbeat alone
    assert not await hosts.answered(store, entry, "0.1.0", "r1", "b" * 32)  # restarted: same version, new session
    assert (await hosts.load(store, host.uuid)).agent_session == "b" * 32


def test_ssh_credentials_are_sealed_and_only_the_same_keys_open_them():
    ssh = SshCredentials(user="admin", port=2222, password="s3cret")
    host = Host.model_validate({**STORED, "ssh_secret": hosts.seal_ssh(SETTINGS, ssh)})
    assert "s3cret" not in host.record()["ssh_secret"]
    assert hosts.open_ssh(SETTINGS, host) == ssh
    assert hosts.open_ssh(SETTINGS, Host.model_validate(STORED)) is None
    other = SETTINGS.model_copy(update={"secret_key": SecretStr(Fernet.generate_key().decode())})
    with pytest.raises(CredentialError) as e:
        hosts.open_ssh(other, host)
    assert (e.value.status, e.value.code) == (409, "undecryptable")


def test_tokens_are_kept_as_hashes():
    assert hosts.token_hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


async def test_a_vm_placed_on_a_host_while_it_is_deleted_keeps_the_host():
    store = await cloud("h1")
    vm = keys.desired_for("h1", stream_key_vm("v1"))
    store.meanwhile.append(Txn().put(vm, {"uuid": "v1", "name": "late"}).put(keys.vm_index("v1"), {"host": "h1"}))
    with pytest.raises(InUse) as e:  # after it counted none
        await hosts.delete(store, "kvm-h1")
    assert e.value.message == "host kvm-h1 still has 1 VM: late (v1); delete or move them first"
    assert await store.get(vm) is not None and await store.get(keys.host("h1")) is not None
    await store.delete(vm)
    await hosts.delete(store, "kvm-h1")
    assert await store.get(keys.host("h1")) is None


async def test_an_image_store_added_on_a_host_while_it_is_deleted_keeps_the_host():
    store = await cloud("h1")
    record = {"uuid": "s1", "name": "images", "host_uuid": "h1", "path": "/srv/images", "zone": "z", "created_at": 1.0}
    store.meanwhile.append(Txn().put(keys.image_store("s1"), record))
    with pytest.raises(InUse, match="^host kvm-h1 holds an image store; delete it first$"):  # after it read none
        await hosts.delete(store, "kvm-h1")
    assert await store.get(keys.host("h1")) is not None


async def test_an_agent_whose_renewed_token_never_reached_it_gets_in_with_its_old_one_and_renews_again():
    store, settings = MemoryStore(), SETTINGS.model_copy(update={"host_token_lifetime": 600})
    host, first = await hosts.register(store, settings, "kvm-1", "198.18.0.2", "kvm", None)
    assert 399 < (hosts.renew_in(hosts.renew_at(host, 600)) or 0) <= 400  # agents are told a delay, not an instant
    cache = HostCredentials(store)  # what authenticates the agent's requests, as the API refreshes it
    used = await cache.authenticate(host.uuid, first)
    assert used is not None
    lost, _ = await hosts.renew_token(store, settings, host.uuid, used.sha256)  # committed; its answer lost
    await cache.refresh(host.uuid)

    used = await cache.authenticate(host.uuid, first)  # the agent connects again with the only token it has
    assert used is not None
    renew_at = hosts.renew_at(await hosts.find(store, host.uuid), settings.host_token_lifetime, used.sha256)
    assert renew_at is not None and renew_at <= time.time() and hosts.renew_in(renew_at) == 0  # now, not in 400 s
    token, _ = await hosts.renew_token(store, settings, host.uuid, used.sha256)
    await cache.refresh(host.uuid)
    assert await cache.authenticate(host.uuid, token) is not None
    assert await cache.authenticate(host.uuid, lost) is None  # the one it never received is void

    await deploys.agent_token(store, settings, host.uuid, None)  # `hs deploy token`: every earlier one is void
    await cache.refresh(host.uuid)
    assert await cache.authenticate(host.uuid, first) is None and await cache.authenticate(host.uuid, token) is None


async def test_two_hosts_added_at_once_under_one_name_make_one_host():
    """Another replica adds a host of the same name after this one read the names: this one is refused."""
    store = MemoryStore()
    other = Host.model_validate({**STORED, "uuid": "h9", "name": "kvm-2"})
    store.meanwhile.append(Txn().put(keys.host("h9"), other.record()))
    with pytest.raises(Exists):
        await hosts.register(store, SETTINGS, "kvm-2", "198.18.0.3", "kvm", None)
    assert [h.uuid for h in await hosts.all_hosts(store)] == ["h9"]
    added, _ = await hosts.register(store, SETTINGS, "kvm-3", "198.18.0.4", "kvm", None)
    assert sorted(h.name for h in await hosts.all_hosts(store)) == ["kvm-2", "kvm-3"] and added.name == "kvm-3"


@pytest.mark.parametrize("first, again", [("198.18.0.2", "198.18.0.2"), ("kvm-1.Example.com", "KVM-1.example.com"),
                                           ("fd00::1", "fd00:0:0:0:0:0:0:1"), ("FD00::1", "fd00::1"),
                                           ("198.18.0.2", "::ffff:198.18.0.2")])
async def test_a_second_host_of_a_kind_at_an_address_however_spelt_is_refused_naming_the_first(first, again):
    """One machine registered twice: its two agents would share one unit, config and install directory. Hosts of
    other kinds share its address (a console proxy on a control node, a cephagent on a hypervisor)."""
    store = MemoryStore()
    kvm, _ = await hosts.register(store, SETTINGS, "kvm-1", first, "kvm", None)
    with pytest.raises(Exists) as e:
        await hosts.register(store, SETTINGS, "kvm-2", again, "kvm", None)
    assert (e.value.code, e.value.field) == ("exists", "address")
    assert str(e.value) == f"host kvm-1 ({kvm.uuid}) is the kvm host at {first} already: an address has one host " \
                           "of each kind"
    for kind in ("ceph", "consoleproxy", "imagestore"):
        await hosts.register(store, SETTINGS, f"{kind}-1", again, kind, None)
    assert sorted(h.name for h in await hosts.all_hosts(store)) == ["ceph-1", "consoleproxy-1", "imagestore-1",
                                                                    "kvm-1"]


async def test_two_hosts_of_a_kind_added_at_once_at_one_address_make_one_host():
    """Another replica adds a KVM host at this address after this one read the hosts: this one is refused."""
    store = MemoryStore()
    other = Host.model_validate({**STORED, "uuid": "h9", "name": "kvm-9"})
    store.meanwhile.append(Txn().put(keys.host("h9"), other.record()))
    with pytest.raises(Exists, match="host kvm-9 \\(h9\\) is the kvm host at 198.18.0.2"):
        await hosts.register(store, SETTINGS, "kvm-1", "198.18.0.2", "kvm", None)
    assert [h.uuid for h in await hosts.all_hosts(store)] == ["h9"]


async def test_a_kvm_agent_gets_an_api_token_of_its_own_and_the_other_agents_none():
    """The deploy asks for the tokens of the agent's own API: a KVM host's is made once and kept; a console
    proxy's, a cephagent's and an image store's APIs take the scrapers' metrics token alone."""
    store = MemoryStore()
    kvm, kvm_token = await hosts.register(store, SETTINGS, "kvm-1", "198.18.0.2", "kvm", None)
    proxy, _ = await hosts.register(store, SETTINGS, "cp-1", "198.18.0.3", "consoleproxy", None)
    mon, _ = await hosts.register(store, SETTINGS, "mon-1", "198.18.0.4", "ceph", None)
    images, _ = await hosts.register(store, SETTINGS, "is-1", "198.18.0.5", "imagestore", None)
    first = await deploys.agent_api_token(store, SETTINGS, kvm.uuid, rotate=False)
    assert first not in (None, kvm_token) and await deploys.agent_api_token(store, SETTINGS, "kvm-1", False) == first
    for other in (proxy, mon, images):
        assert await deploys.agent_api_token(store, SETTINGS, other.uuid, rotate=True) is None
        assert (await hosts.find(store, other.uuid)).api_secret is None


async def test_a_heartbeat_taken_as_its_host_is_deleted_writes_nothing_back():
    """An agent's heartbeat let in before the delete, and a polled host's (its agent asked before it)."""
    store = await cloud("h1")
    host = Host.model_validate((await store.get(keys.host("h1"))).value).model_copy(update={"agent_version": "1"})
    await store.put(keys.host("h1"), host.record())
    polled = await store.get(keys.host("h1"))
    await hosts.heartbeat(store, "h1", "r1")
    await hosts.delete(store, "kvm-h1")
    with pytest.raises(NotFound):
        await hosts.heartbeat(store, "h1", "r1")
    assert not await hosts.answered(store, polled, "1", "r1")
    assert [k for k in store.kv if "h1" in k] == []


async def test_a_deploy_log_line_posted_as_its_host_is_deleted_is_not_kept(monkeypatch):
    """A deploy that runs on while its host is deleted: its lines after the delete have no host to go with."""
    store = await cloud("h1")
    host = await hosts.find(store, "h1")
    line = deploys.DeployLogEntry(host="kvm-h1", task="install", phase="before")
    await deploys.add_log(store, "h1", line)
    assert len(await deploys.read_log(store, "h1")) == 1
    await hosts.delete(store, "h1")

    async def found_before_the_delete(store: object, ref: str) -> Host:
        return host

    monkeypatch.setattr(hosts, "find", found_before_the_delete)
    with pytest.raises(NotFound):
        await deploys.add_log(store, "h1", line)
    assert [k for k in store.kv if "h1" in k] == []


async def test_a_host_with_vms_is_refused_naming_the_first_few():
    store = await cloud("h1")
    for i in range(7):
        await store.put(keys.desired_for("h1", stream_key_vm(f"v{i}")), {"uuid": f"v{i}", "name": f"web{i}"})
    with pytest.raises(InUse) as e:
        await hosts.delete(store, "kvm-h1")
    assert e.value.message == ("host kvm-h1 still has 7 VMs: web0 (v0), web1 (v1), web2 (v2), web3 (v3), web4 (v4) "
                               "and 2 more; delete or move them first")
