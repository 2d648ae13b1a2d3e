"""A VM as requested, the desired object rendered from it, and what becomes of it (on an in-memory store)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentkit import __version__
from agentkit.errors import HostStackError, Invalid, NotFound
from agentkit.model import (
    BootDevice,
    FileDisk,
    IsoSpec,
    KernelBoot,
    LiveMigration,
    NicSpec,
    ObservedBatch,
    ObservedEvent,
    RbdDisk,
    VmSpec,
    stream_key_l3,
    stream_key_vm,
)
from agentkit.paths import PathOutside
from coordinator.api import parse
from coordinator.domain import hosts, livemigration, networks, observed, vmnics, vmrecords, vms
from coordinator.domain.ceph.records import VolumeRecord
from coordinator.domain.errors import InvalidState, IpExhausted, MacInUse, NotRunning
from coordinator.domain.filestorage import migration, vmdisks
from coordinator.domain.filestorage.records import FileStorageRecord, load_volume
from coordinator.domain.vmfiles import Files
from coordinator.domain.vms import VmCreate, desired_spec
from coordinator.etcd import hints as hints_module
from coordinator.etcd import keys
from coordinator.etcd.hints import Hints
from coordinator.etcd.store import Txn

from .cloud import HEARTBEAT_TIMEOUT, cloud, network, vm
from .memstore import MemoryStore


def test_the_default_l3_is_the_first_and_must_be_one_of_the_vms():
    assert VmCreate(name="a", l3_network_uuids=["n1", "n2"]).default_l3_uuid == "n1"
    for fields, field, words in (
            ({"default_l3_uuid": "n2"}, "default_l3_uuid", "must be one of l3_network_uuids"),
            ({"l3_network_uuids": ["n1", "n1"]}, "l3_network_uuids", "an L3 network may appear once"),
            ({"fixed_ips": {"n2": "198.18.0.5"}}, "fixed_ips", "n2 is not in l3_network_uuids")):
        with pytest.raises(ValidationError) as e:
            VmCreate.model_validate({"name": "a", "l3_network_uuids": ["n1"], **fields})
        error = parse.invalid(e.value, "body")  # as the API answers it: the field named (`hs`: its argument)
        assert (error.field, error.message) == (field, f"body field {field}: {words}")


def test_the_spec_boots_an_iso_first_numbers_data_volumes_and_renders_tags():
    body = VmCreate.model_validate({
        "name": "web", "iso_path": "/isos/a.iso", "system_tags": ["userdata::x: 1"],
        "root_volume": {"kind": "file", "path": "/v/root.qcow2"},
        "data_volumes": [{"kind": "file", "path": "/v/d1.qcow2"}, {"kind": "file", "path": "/v/d2.qcow2"}]})
    nic = NicSpec(uuid="c1", l3_uuid="n1", mac="fa:16:3e:00:00:01", ip="198.18.0.5", default=True)
    spec = desired_spec("v1", body, [nic])
    assert spec.boot_order == [BootDevice.CDROM, BootDevice.HARDDISK]
    assert spec.cdrom and spec.cdrom.path == "/isos/a.iso"
    assert [(v.role, v.device_index) for v in spec.volumes] == [("root", 0), ("data", 1), ("data", 2)]
    assert spec.userdata == "x: 1" and spec.nics == [nic]
    assert desired_spec("v2", VmCreate(name="b"), []).boot_order == [BootDevice.HARDDISK]


def test_the_files_a_request_names_are_normalised_and_inside_the_roots():
    roots = ["/var/lib/hoststack"]
    body = VmCreate.model_validate({
        "name": "web", "iso_path": "/var/lib/hoststack/isos/a.iso", "kernel": {"kernel": "k/vmlinux"},
        "root_volume": {"kind": "file", "path": "v/root.qcow2", "backing": "/var/lib/hoststack/img/base.raw"},
        "data_volumes": [{"kind": "rbd", "pool": "p", "image": "i", "monitors": ["m"], "secret_uuid": "s"},
                         {"kind": "file", "path": "v/d2.qcow2"}]})
    assert body.files().named() == {
        "iso_path": "/var/lib/hoststack/isos/a.iso", "root_volume.path": "v/root.qcow2",
        "root_volume.backing": "/var/lib/hoststack/img/base.raw", "data_volumes.1.path": "v/d2.qcow2",
        "kernel.kernel": "k/vmlinux"}
    body.files().check(roots)
    for bad, field in ((Files(iso="/etc/shadow"), "iso_path"),
                       (Files(kernel=KernelBoot(kernel="../../../../etc/shadow")), "kernel.kernel"),
                       (Files({"disk": FileDisk(path="a/../../b")}), "disk.path")):
        with pytest.raises(PathOutside) as e:
            bad.check(roots)
        assert e.value.field == field


async def test_a_vm_deleted_while_it_moves_live_leaves_nothing_on_the_target():
    store = await cloud()
    spec = await vm(store)
    await store.put(keys.observed("vm", spec.uuid), {"state": "Running"})
    await livemigration.start(store, spec.uuid, "kvm-h2", HEARTBEAT_TIMEOUT, "qemu+tcp://{address}/system")
    assert await store.count(keys.desired_host("h2") + "vm/") == 1  # the target's incoming copy
    await vms.destroy(store, spec.uuid)
    assert [k for k in store.kv if k.startswith(keys.DESIRED_HOSTS)] == []
    await hosts.delete(store, "kvm-h2")  # no VM holds it


def prepared(seq: int, uuid: str, move: str) -> ObservedBatch:
    """What a target's agent reports once it applied what the VM moving there needs (kvmagent/components.py)."""
    body = {"state": "Stopped", "console": None, "boot_order": None, "prepared": move}
    return ObservedBatch(events=[ObservedEvent(seq=seq, kind="vm", id=uuid, body=body, at=1.0)])


async def test_a_vm_moving_live_is_sent_only_once_its_target_reported_it_prepared_for_that_move():
    store = await cloud()
    spec = await vm(store)
    await store.put(keys.observed("vm", spec.uuid), {"state": "Running"})
    _, moving = await livemigration.start(store, spec.uuid, "kvm-h2", HEARTBEAT_TIMEOUT, "qemu+tcp://{address}/system")
    assert moving.migrate_to is not None and not moving.migrate_to.ready  # the source waits
    move = moving.migrate_to.id
    await observed.ingest(store, "h1", prepared(1, spec.uuid, move))  # the source's word is not the target's
    await observed.ingest(store, "h2", prepared(1, spec.uuid, "another0"))  # nor is a word on another move
    _, waiting, _ = await vmrecords.load(store, spec.uuid)
    assert waiting.migrate_to is not None and not waiting.migrate_to.ready
    await observed.ingest(store, "h2", prepared(2, spec.uuid, move))
    host, sent, _ = await vmrecords.load(store, spec.uuid)
    assert host == "h1" and sent.migrate_to is not None and sent.migrate_to.ready
    assert (await store.get(keys.observed("vm", spec.uuid))).value == {"state": "Running"}  # a step, not a state


async def test_a_vm_that_does_not_run_is_refused_a_live_move_naming_live():
    """`hs vm migrate VM HOST --live`: the flag is at fault, not the host (`hs` names the argument the API names)."""
    store = await cloud()
    spec = await vm(store, state="Stopped")
    with pytest.raises(NotRunning) as e:
        await livemigration.start(store, spec.uuid, "kvm-h2", HEARTBEAT_TIMEOUT, "qemu+tcp://{address}/system")
    assert (e.value.field, e.value.message) == ("live", "VM web is Stopped: only a running VM migrates live (a "
                                                        "stopped one migrates cold)")


async def test_a_vm_moves_live_only_between_hosts_whose_agents_run_the_coordinators_version():
    """An older agent would take the source's spec, which tells when the target prepared, for an invalid one:
    treated as absent, its domain destroyed."""
    store = await cloud()
    spec = await vm(store)
    await store.put(keys.observed("vm", spec.uuid), {"state": "Running"})
    host = await hosts.load(store, "h2")
    await store.put(keys.host("h2"), host.model_copy(update={"agent_version": "0.0.9"}).record())
    with pytest.raises(InvalidState) as e:
        await livemigration.start(store, spec.uuid, "kvm-h2", HEARTBEAT_TIMEOUT, "qemu+tcp://{address}/system")
    assert (e.value.field, e.value.message) == (
        "host_uuid", f"the agent of host kvm-h2 (h2) is version 0.0.9, this coordinator {__version__}: VM web moves "
        "live once it is upgraded")
    await store.put(keys.host("h2"), host.model_copy(update={"agent_version": __version__}).record())
    _, moving = await livemigration.start(store, spec.uuid, "kvm-h2", HEARTBEAT_TIMEOUT, "qemu+tcp://{address}/system")
    assert moving.migrate_to is not None and moving.migrate_to.host == "h2"


def step(seq: int, uuid: str, **body: object) -> ObservedBatch:
    """A live migration's step as an agent reports it (kvmagent/vms/observe.py)."""
    return ObservedBatch(events=[ObservedEvent(seq=seq, kind="vm", id=uuid, at=1.0, body={
        "state": "Running", "console": None, "boot_order": None, **body})])


async def test_a_move_its_target_has_not_prepared_for_is_called_off_at_once_and_one_it_has_once_the_source_kept_it():
    store = await cloud()
    spec = await vm(store)
    await store.put(keys.observed("vm", spec.uuid), {"state": "Running"})
    uri = "qemu+tcp://{address}/system"
    await livemigration.start(store, spec.uuid, "kvm-h2", HEARTBEAT_TIMEOUT, uri)
    host, kept = await livemigration.cancel(store, spec.uuid)  # the target's agent never prepared
    assert host == "h1" and kept.migrate_to is None and kept.generation == spec.generation + 2
    assert await store.count(keys.desired_host("h2")) == 0  # its copy, and the memory it held there, gone
    with pytest.raises(InvalidState) as e:
        await livemigration.cancel(store, spec.uuid)
    assert (e.value.field, e.value.message) == ("uuid", "VM web is not moving live")

    _, moving = await livemigration.start(store, spec.uuid, "kvm-h2", HEARTBEAT_TIMEOUT, uri)  # once more
    assert moving.migrate_to is not None
    move = moving.migrate_to.id
    await observed.ingest(store, "h2", prepared(1, spec.uuid, move))
    await observed.ingest(store, "h1", step(1, spec.uuid, migrated=move))  # a try paused it, then failed
    host, aborting = await livemigration.cancel(store, spec.uuid)  # the source may be sending it: it is told
    assert host == "h1" and aborting.migrate_to == moving.migrate_to.model_copy(
        update={"prepared": True, "released": True, "abort": True})
    assert await store.count(keys.desired_host("h2")) == 1
    assert (await livemigration.cancel(store, spec.uuid))[1] == aborting  # asked twice: the same
    with pytest.raises(InvalidState) as e:
        await livemigration.start(store, spec.uuid, "kvm-h2", HEARTBEAT_TIMEOUT, uri)
    assert (e.value.field, e.value.message) == ("host_uuid", "VM web's move to host kvm-h2 (h2) is being called off: "
                                                "ask again once it is")
    await observed.ingest(store, "h2", step(2, spec.uuid, kept=move))  # only the source's word ends it
    await observed.ingest(store, "h1", step(2, spec.uuid, kept="another0"))  # on this move
    assert (await vmrecords.load(store, spec.uuid))[1] == aborting
    await observed.ingest(store, "h1", step(3, spec.uuid, kept=move))
    host, ended, _ = await vmrecords.load(store, spec.uuid)
    assert host == "h1" and ended.migrate_to is None and await store.count(keys.desired_host("h2")) == 0
    assert (await store.get(keys.observed("vm", spec.uuid))).value == {"state": "Running"}  # a step, not a state


async def prepared_move(store: MemoryStore) -> tuple[VmSpec, str]:
    """A running VM on h1 moving live to h2, which prepared for it: the VM as made, and the move's id."""
    spec = await vm(store)
    await store.put(keys.observed("vm", spec.uuid), {"state": "Running"})
    _, moving = await livemigration.start(store, spec.uuid, "kvm-h2", HEARTBEAT_TIMEOUT, "qemu+tcp://{address}/system")
    assert moving.migrate_to is not None
    await observed.ingest(store, "h2", prepared(1, spec.uuid, moving.migrate_to.id))
    return spec, moving.migrate_to.id


async def test_a_move_called_off_that_arrived_first_ends_on_the_target():
    store = await cloud()
    spec, move = await prepared_move(store)
    await livemigration.cancel(store, spec.uuid)
    await observed.ingest(store, "h2", step(2, spec.uuid, arrived=move))
    with pytest.raises(InvalidState) as e:
        await livemigration.cancel(store, spec.uuid)
    assert (e.value.field, e.value.message) == ("uuid", "VM web runs on host kvm-h2 (h2) already: the move ends there")
    await observed.ingest(store, "h1", step(1, spec.uuid, kept=move))  # too late: it runs there
    await observed.ingest(store, "h1", step(2, spec.uuid, state="Stopped", kept=move))  # stopped there: as late
    await observed.ingest(store, "h1", step(3, spec.uuid, migrated=move))
    host, there, _ = await vmrecords.load(store, spec.uuid)
    assert host == "h2" and there.migrate_to is None and there.state == "Running"


async def test_a_vm_stopped_on_its_source_before_it_was_sent_ends_its_move_there_stopped():
    """Its guest powered off once the target prepared (libvirt refusing the send, say): the source's word that it
    stopped there, not sent, ends the move unasked, the target's copy (and the memory it held there) gone; the
    stop, drift under `adopt`, becomes the VM's desired state in that write, as any out-of-band stop does."""
    store = await cloud()
    spec, move = await prepared_move(store)
    _, ready, _ = await vmrecords.load(store, spec.uuid)
    stopped = {"state": "Stopped", "drift": True, "generation": ready.generation, "kept": move}
    await observed.ingest(store, "h1", step(1, spec.uuid, **{**stopped, "generation": ready.generation - 1}))
    await observed.ingest(store, "h2", step(2, spec.uuid, **stopped))  # only the source's word counts
    assert (await vmrecords.load(store, spec.uuid))[1] == ready  # the first against a spec since changed: sent again
    await observed.ingest(store, "h1", step(2, spec.uuid, **stopped))
    host, ended, _ = await vmrecords.load(store, spec.uuid)
    assert host == "h1" and ended == ready.model_copy(update={"migrate_to": None, "state": "Stopped",
                                                              "generation": ready.generation + 1})
    assert await store.count(keys.desired_host("h2")) == 0
    assert (await store.get(keys.observed("vm", spec.uuid))).value == {"state": "Running"}  # a step, not a state


async def test_a_vm_stopped_on_its_source_without_drift_ends_its_move_there_desired_running():
    """Under `restart` (no drift) the source starts it again; a move not prepared for ends so too. A VM running on
    its source ends only a move called off."""
    store = await cloud()
    spec = await vm(store)
    await store.put(keys.observed("vm", spec.uuid), {"state": "Running"})
    _, moving = await livemigration.start(store, spec.uuid, "kvm-h2", HEARTBEAT_TIMEOUT, "qemu+tcp://{address}/system")
    assert moving.migrate_to is not None
    await observed.ingest(store, "h1", step(1, spec.uuid, kept=moving.migrate_to.id))  # runs there: not called off
    assert (await vmrecords.load(store, spec.uuid))[1] == moving
    await observed.ingest(store, "h1", step(2, spec.uuid, state="Crashed", kept=moving.migrate_to.id))
    host, ended, _ = await vmrecords.load(store, spec.uuid)
    assert host == "h1" and ended.migrate_to is None and ended.state == "Running"
    assert await store.count(keys.desired_host("h2")) == 0


def test_a_move_recorded_by_a_coordinator_without_the_prepared_step_is_sent_at_once():
    """During a rolling upgrade: an older coordinator never says a target prepared."""
    old = {"id": "move0001", "host": "h2", "uri": "qemu+tcp://198.18.0.2/system", "address": "198.18.0.2"}
    assert LiveMigration.model_validate(old).ready
    assert not LiveMigration.model_validate(LiveMigration(**old).model_dump(mode="json")).ready


async def test_a_vm_moving_live_is_refused_another_move_naming_it_and_its_target():
    store = await cloud("h1", "h2", "h3")
    spec = await vm(store)
    await store.put(keys.observed("vm", spec.uuid), {"state": "Running"})
    await livemigration.start(store, spec.uuid, "kvm-h2", HEARTBEAT_TIMEOUT, "qemu+tcp://{address}/system")
    with pytest.raises(InvalidState) as e:
        await vms.migrate(store, spec.uuid, "kvm-h3", HEARTBEAT_TIMEOUT)
    assert (e.value.field, e.value.message) == (
        "host_uuid", f"VM web ({spec.uuid}) is moving live: wait for it to arrive, or call the move off "
        "(cancel-migration)")
    with pytest.raises(InvalidState) as e:
        await livemigration.start(store, spec.uuid, "kvm-h3", HEARTBEAT_TIMEOUT, "qemu+tcp://{address}/system")
    assert (e.value.field, e.value.message) == ("host_uuid", "VM web is moving live to host kvm-h2 (h2) already")


@pytest.mark.parametrize("live", [False, True])
async def test_a_vm_moving_live_to_a_host_since_it_was_read_is_refused_another_move(live):
    store = await cloud("h1", "h2", "h3")
    spec = await vm(store)
    await store.put(keys.observed("vm", spec.uuid), {"state": "Running"})
    _, s, entry = await vmrecords.load(store, spec.uuid)  # another replica starts it moving to h3
    move = LiveMigration(id="m3", host="h3", uri="qemu+tcp://198.18.0.2/system", address="198.18.0.2")
    copy = keys.desired_for("h3", stream_key_vm(spec.uuid))
    store.meanwhile.append(Txn().put(entry.key, s.model_copy(update={"migrate_to": move}).model_dump(mode="json"))
                           .put(copy, s.model_copy(update={"incoming": "m3"}).model_dump(mode="json")))
    with pytest.raises(InvalidState) as e:
        if live:
            await livemigration.start(store, spec.uuid, "kvm-h2", HEARTBEAT_TIMEOUT, "qemu+tcp://{address}/system")
        else:
            await vms.migrate(store, spec.uuid, "kvm-h2", HEARTBEAT_TIMEOUT)
    assert e.value.field == "host_uuid"
    assert e.value.message == ("VM web is moving live to host kvm-h3 (h3) already" if live else
                               f"VM web ({spec.uuid}) is moving live: wait for it to arrive, or call the move off "
                               "(cancel-migration)")
    assert await vmrecords.locate(store, spec.uuid) == "h1"
    assert (await vmrecords.load(store, spec.uuid))[1].migrate_to == move
    assert await store.count(keys.desired_host("h2")) == 0


async def test_a_vm_moved_to_the_host_it_is_on_is_refused_naming_that_host():
    store = await cloud()
    spec = await vm(store)
    with pytest.raises(InvalidState) as e:
        await vms.migrate(store, spec.uuid, "kvm-h1", HEARTBEAT_TIMEOUT)
    assert (e.value.field, e.value.message) == ("host_uuid", "VM web is on host kvm-h1 (h1) already")
    assert (await vmrecords.load(store, spec.uuid))[1].generation == spec.generation


async def test_detaching_a_nic_the_vm_lacks_names_the_l3_it_was_asked_on():
    store = await cloud()
    priv, other = await network(store), await network(store, "other", "198.18.9.0/24")
    spec = await vm(store, l3_network_uuids=[priv.uuid])
    with pytest.raises(NotFound) as e:
        await vmnics.detach(store, spec.uuid, other.uuid)
    assert e.value.message == "VM web has no NIC on L3 network other"
    with pytest.raises(NotFound) as e:
        await vmnics.detach(store, spec.uuid, "nope")
    assert e.value.message == "VM web has no NIC nope"


async def test_a_nic_attached_with_a_mac_it_cannot_have_is_refused_naming_the_mac():
    store = await cloud()
    priv, other = await network(store), await network(store, "other", "198.18.9.0/24")
    await vm(store, l3_network_uuids=[priv.uuid], fixed_macs={priv.uuid: "52:54:00:00:00:01"})
    bare = await vm(store, "bare")
    for l3, mac, error in ((priv, "52:54:00:00:00:01", MacInUse), (other, "01:00:5e:00:00:01", Invalid)):
        with pytest.raises(error) as e:
            await vmnics.attach(store, bare.uuid, l3.uuid, mac=mac)
        assert e.value.field == "mac"  # as `hs vm attach-nic --mac` sends it, not the create's fixed_macs


def deleted(host: str) -> Txn:
    """Another replica's delete of `host`, which counted no VM on it (hosts.delete)."""
    return Txn().absent(keys.desired_host(host) + "vm/", prefix=True).delete(keys.host(host))


async def test_a_vm_placed_on_a_host_deleted_before_it_commits_is_placed_again():
    store = await cloud("h1", "h2")
    for h in ("h1", "h2"):
        await hosts.heartbeat(store, h, "r1")
    store.meanwhile.append(deleted("h1"))  # placement chose h1 (fewest VMs, then uuid), then it went
    host, spec = await vms.create(store, Hints(), VmCreate(name="web"), HEARTBEAT_TIMEOUT, [])
    assert host == "h2" and await store.get(keys.desired_for("h2", stream_key_vm(spec.uuid))) is not None
    assert await store.get(keys.host("h1")) is None and await store.count(keys.desired_host("h1")) == 0


async def test_a_vm_made_with_volumes_on_a_host_deleted_before_it_commits_is_placed_again():
    """Placement by storage capacity (filestorage/placement.py) guards the host it picks, as plain placement does."""
    store = await cloud("h1", "h2")
    local = FileStorageRecord(uuid="l1", name="local", type="LocalStorage", url="/ps", created_at=0)
    await store.put(keys.file_storage(local.uuid), local.model_dump())
    for h in ("h1", "h2"):
        await hosts.heartbeat(store, h, "r1")
        await store.put(keys.observed("storage", f"l1.{h}"), {"state": "Ready", "capacity": {"total": 1 << 40}})
    store.meanwhile.append(deleted("h1"))  # placement chose h1 (fewest VMs, then uuid), then it went
    host, spec = await vms.create(store, Hints(), VmCreate(name="web", data_disks=[1 << 30]), HEARTBEAT_TIMEOUT, [])
    assert host == "h2" and await store.get(keys.desired_for("h2", stream_key_vm(spec.uuid))) is not None
    assert await store.get(keys.host("h1")) is None and await store.count(keys.desired_host("h1")) == 0


async def test_a_vm_made_with_volumes_on_a_storage_deleted_before_it_commits_is_refused_and_makes_none():
    store = await cloud("h1")
    local = FileStorageRecord(uuid="l1", name="local", type="LocalStorage", url="/ps", created_at=0)
    await store.put(keys.file_storage(local.uuid), local.model_dump())
    await store.put(keys.observed("storage", "l1.h1"), {"state": "Ready", "capacity": {"total": 1 << 40}})
    await hosts.heartbeat(store, "h1", "r1")
    store.meanwhile.append(Txn().delete(keys.file_storage(local.uuid)))  # on another replica, after it was read
    with pytest.raises(Invalid, match="^local is no LocalStorage or SharedMountPoint primary storage") as e:
        await vms.create(store, Hints(), VmCreate(name="web", data_disks=[1 << 30], primary_storage_uuid="local"),
                         HEARTBEAT_TIMEOUT, [])
    assert e.value.field == "primary_storage_uuid"
    assert await store.count(keys.VM_INDEX) == 0 and await store.count(keys.FILE_VOLUMES) == 0


@pytest.mark.parametrize("live", [False, True])
async def test_a_vm_migrated_to_a_host_deleted_before_it_commits_stays_where_it_is(live):
    store = await cloud()
    spec = await vm(store)
    await store.put(keys.observed("vm", spec.uuid), {"state": "Running"})
    store.meanwhile.append(deleted("h2"))  # after the migration found h2, before it commits
    with pytest.raises(HostStackError) as e:
        if live:
            await livemigration.start(store, spec.uuid, "kvm-h2", HEARTBEAT_TIMEOUT, "qemu+tcp://{address}/system")
        else:
            await vms.migrate(store, spec.uuid, "kvm-h2", HEARTBEAT_TIMEOUT)
    assert (e.value.status, e.value.field, e.value.message) == (400, "host_uuid", "no KVM host h2")
    host, after, _ = await vmrecords.load(store, spec.uuid)
    assert (host, after.migrate_to) == ("h1", None) and await store.count(keys.desired_host("h2")) == 0


async def local_vm(store: MemoryStore) -> tuple[str, str]:
    """A stopped VM on h1 with a data volume on LocalStorage (usable on h1 and h2), Ready there: its uuid, the
    volume's."""
    local = FileStorageRecord(uuid="l1", name="local", type="LocalStorage", url="/ps", created_at=0)
    await store.put(keys.file_storage(local.uuid), local.model_dump())
    for h in ("h1", "h2"):
        await store.put(keys.observed("storage", f"l1.{h}"), {"state": "Ready", "capacity": {"total": 1 << 40}})
    spec = await vm(store, state="Stopped", data_disks=[1 << 30])
    volume = next(v.uuid for v in spec.volumes if v.role == "data")
    await store.put(keys.observed("volume", volume), {"host": "h1", "state": "Ready"})
    return spec.uuid, volume


@pytest.mark.parametrize("alone", [False, True])
async def test_local_volumes_migrated_to_a_host_deleted_before_they_start_stay_where_they_are(alone):
    """A VM's cold migration, or a detached volume's (`alone`)."""
    store = await cloud()
    uuid, volume = await local_vm(store)
    if alone:
        await vms.detach_volume(store, uuid, volume)
    store.meanwhile.append(deleted("h2"))  # after the migration found h2, before the volumes' move commits
    with pytest.raises(HostStackError) as e:
        if alone:
            await migration.migrate_volume(store, volume, "kvm-h2", HEARTBEAT_TIMEOUT)
        else:
            await vms.migrate(store, uuid, "kvm-h2", HEARTBEAT_TIMEOUT)
    assert (e.value.status, e.value.field, e.value.message) == (400, "host_uuid", "no KVM host h2")
    rec, _ = await load_volume(store, volume)
    assert (rec.host_uuid, rec.migration, (await vmrecords.load(store, uuid))[0]) == ("h1", None, "h1")
    assert await store.count(keys.desired_host("h2")) == 0 and await store.get(keys.reserved("l1", "h2")) is None


async def test_a_vm_whose_local_volumes_arrived_on_a_host_deleted_since_does_not_follow_them():
    store = await cloud()
    uuid, volume = await local_vm(store)
    await vms.migrate(store, uuid, "kvm-h2", HEARTBEAT_TIMEOUT)
    moving = (await load_volume(store, volume))[0].migration
    assert moving is not None
    store.meanwhile.append(deleted("h2"))  # h2 verified the copy, then went before the VM followed
    with pytest.raises(HostStackError) as e:
        await migration.complete(store, "h2", volume, moving.id)
    assert (e.value.status, e.value.field, e.value.message) == (400, "host_uuid", "no KVM host h2")
    assert (await vmrecords.load(store, uuid))[0] == "h1" and await store.count(keys.desired_host("h2") + "vm/") == 0


@pytest.mark.parametrize("ref, status, code", [(None, 409, "no_host"), ("kvm-h1", 400, "invalid")])
async def test_a_vm_whose_only_host_is_deleted_before_it_commits_is_refused(ref, status, code):
    store = await cloud("h1")
    await hosts.heartbeat(store, "h1", "r1")
    store.meanwhile.append(deleted("h1"))
    with pytest.raises(HostStackError) as e:
        await vms.create(store, Hints(), VmCreate(name="web", host_uuid=ref), HEARTBEAT_TIMEOUT, [])
    assert (e.value.status, e.value.code, e.value.field) == (status, code, "host_uuid")
    assert await store.count(keys.DESIRED_HOSTS) == 0 and await store.count(keys.VM_INDEX) == 0


@pytest.mark.parametrize("action", ["pause", "resume"])
async def test_a_stopped_vm_neither_pauses_nor_resumes_it_is_started(action):
    store = await cloud()
    spec = await vm(store, state="Stopped")
    with pytest.raises(InvalidState) as e:
        await vms.act(store, spec.uuid, action)
    assert (e.value.status, e.value.code) == (409, "invalid_state")
    assert e.value.message == f"VM web is Stopped; only a running or paused VM can {action}: start it"
    assert (await vmrecords.load(store, spec.uuid))[1].state == "Stopped"


async def test_pause_and_resume_again_change_nothing():
    store = await cloud()
    spec = await vm(store)
    for action, state in (("pause", "Paused"), ("pause", "Paused"), ("resume", "Running"), ("resume", "Running")):
        assert (await vms.act(store, spec.uuid, action))[1].state == state


async def test_a_replicas_ipam_hints_go_with_their_l3_and_stay_bounded_over_many_l3s(monkeypatch):
    """L3s made and deleted over months (on any replica): a replica keeps hints for a bounded number of them."""
    store = await cloud()
    hints = Hints()
    l3 = await network(store, cidr="198.18.8.0/28")
    made = (await vms.create(store, hints, VmCreate(name="a", host_uuid="h1", l3_network_uuids=[l3.uuid]),
                             HEARTBEAT_TIMEOUT, []))[1]
    assert hints.taken == {l3.uuid: {made.nics[0].ip}} and set(hints.cursor) == {l3.uuid}
    await vms.destroy(store, made.uuid)
    await networks.delete_l3(store, l3.uuid)
    with pytest.raises(HostStackError, match="does not exist"):
        await vms.create(store, hints, VmCreate(name="b", host_uuid="h1", l3_network_uuids=[l3.uuid]),
                         HEARTBEAT_TIMEOUT, [])
    assert hints.taken == {} and hints.cursor == {}
    monkeypatch.setattr(hints_module, "MAX_L3", 3)
    for i in range(7):
        hints.taken_on(f"l3-{i}").add("198.18.8.2")
        assert len(hints.taken) <= 3
    assert hints.taken == {"l3-6": {"198.18.8.2"}}  # started over when the fourth came


async def test_a_replicas_ipam_hints_stay_bounded_when_a_lost_race_reads_what_is_taken(monkeypatch):
    """A VM's commit that fails (an L3 changed meanwhile) reads each L3's taken addresses: those reads keep the
    bound too."""
    store = await cloud()
    first, second = await network(store, "a"), await network(store, "b", cidr="198.18.9.0/24")
    hints = Hints()
    monkeypatch.setattr(hints_module, "MAX_L3", 1)
    key = keys.desired_all(stream_key_l3(first.uuid))
    store.meanwhile.append(Txn().put(key, store.kv[key].value))  # after the VM read the L3, before it commits
    made = (await vms.create(store, hints, VmCreate(name="web", host_uuid="h1",
                                                    l3_network_uuids=[first.uuid, second.uuid]),
                             HEARTBEAT_TIMEOUT, []))[1]
    assert store.commits > 1 and len(made.nics) == 2
    assert hints.taken == {second.uuid: {made.nics[1].ip}}


async def test_a_replica_that_made_and_deleted_more_vms_than_an_l3_has_addresses_still_gives_them_out():
    """One replica's hints (as in its app) across many VMs made and deleted on a small L3: the addresses of
    deleted VMs are given again, and an L3 that is really full is still refused."""
    store = await cloud()
    l3 = await network(store, cidr="198.18.8.0/28")  # 14 addresses for VMs (no DHCP service)
    hints = Hints()

    async def create(name: str) -> VmSpec:
        body = VmCreate(name=name, host_uuid="h1", l3_network_uuids=[l3.uuid])
        return (await vms.create(store, hints, body, HEARTBEAT_TIMEOUT, []))[1]

    for i in range(100):
        await vms.destroy(store, (await create(f"web{i}")).uuid)
    made = [await create(f"db{i}") for i in range(14)]
    assert len({spec.nics[0].ip for spec in made}) == 14
    with pytest.raises(IpExhausted):
        await create("one-too-many")


async def test_an_iso_inserted_into_a_vm_moved_meanwhile_is_cached_for_its_new_host(monkeypatch):
    """The retry after another replica's migration chose the ISO's cache by the host the VM had left."""
    store = await cloud()
    spec = await vm(store, state="Stopped")
    key = keys.desired_for("h1", stream_key_vm(spec.uuid))
    moved = spec.model_copy(update={"generation": spec.generation + 1}).model_dump(mode="json")
    store.meanwhile.append(Txn().delete(key).put(keys.vm_index(spec.uuid), {"host": "h2"})
                           .put(keys.desired_for("h2", stream_key_vm(spec.uuid)), moved))  # migrated on another replica
    cached_for: list[str] = []

    async def iso(store: object, spec: VmSpec, host: str, iso_uuid: str) -> IsoSpec:
        cached_for.append(host)
        return IsoSpec(uuid="c1", path="/isos/x.iso")
    monkeypatch.setattr(vmdisks, "iso", iso)
    host, after = await vms.set_cdrom(store, spec.uuid, None, [], iso_uuid="iso1")
    assert host == "h2" and cached_for[-1] == "h2" and after.cdrom is not None


async def test_a_vm_migrated_cold_to_the_target_meanwhile_is_refused_a_live_move_there():
    """Its record and the target's incoming copy would be one key written twice in the transaction (refused by etcd)."""
    store = await cloud()
    spec = await vm(store)
    await store.put(keys.observed("vm", spec.uuid), {"state": "Running"})
    key = keys.desired_for("h1", stream_key_vm(spec.uuid))
    moved = spec.model_copy(update={"generation": spec.generation + 1}).model_dump(mode="json")
    store.meanwhile.append(Txn().delete(key).put(keys.vm_index(spec.uuid), {"host": "h2"})
                           .put(keys.desired_for("h2", stream_key_vm(spec.uuid)), moved))  # migrated on another replica
    with pytest.raises(InvalidState) as e:
        await livemigration.start(store, spec.uuid, "kvm-h2", HEARTBEAT_TIMEOUT, "qemu+tcp://{address}/system")
    assert (e.value.field, e.value.message) == ("host_uuid", "VM web runs on host kvm-h2 already")
    assert (await vmrecords.load(store, spec.uuid))[1].migrate_to is None


CEPH_VOLUME = VolumeRecord(uuid="cv1", name="data", primary_storage_uuid="c1", type="Data", pool="d",
                           rbd_image="vol-cv1", size=1, fsid="f", status="Ready", created_at=0)
CEPH_DISK = RbdDisk(pool="d", image="vol-cv1", monitors=["198.18.0.9:6789"], secret_uuid="s", fsid="f")


@pytest.mark.parametrize("use", ["attach", "create"])
async def test_a_ceph_volume_that_another_replica_starts_deleting_meanwhile_is_refused(use):
    """The VM's write did not guard the volume: it got a disk whose RBD image the delete removed next."""
    store = await cloud()
    await store.put(keys.volume(CEPH_VOLUME.uuid), CEPH_VOLUME.model_dump())
    spec = await vm(store, state="Stopped")
    marked = CEPH_VOLUME.model_copy(update={"deleting": "d1"})
    store.meanwhile.append(Txn().put(keys.volume(CEPH_VOLUME.uuid), marked.model_dump()))
    with pytest.raises(HostStackError, match="^volume data is being deleted$") as e:
        if use == "attach":
            await vms.attach_volume(store, spec.uuid, CEPH_DISK, [])
        else:
            await vm(store, "db", root_volume=CEPH_DISK.model_dump())
    assert (e.value.status, e.value.code, e.value.field) == (409, "not_ready", "disk" if use == "attach"
                                                             else "root_volume")
    assert await store.count(keys.VM_INDEX) == 1 and (await vmrecords.load(store, spec.uuid))[1].volumes == []


async def test_a_vm_stopped_meanwhile_is_refused_a_live_move():
    """Its move would never be sent (the source sends a running domain only): the VM would be stuck moving."""
    store = await cloud()
    spec = await vm(store)
    await store.put(keys.observed("vm", spec.uuid), {"state": "Running"})
    store.meanwhile.append(Txn().put(keys.observed("vm", spec.uuid), {"state": "Stopped"}))  # the guest powered off
    with pytest.raises(NotRunning) as e:
        await livemigration.start(store, spec.uuid, "kvm-h2", HEARTBEAT_TIMEOUT, "qemu+tcp://{address}/system")
    assert (e.value.field, e.value.message) == ("live", "VM web is Stopped: only a running VM migrates live (a "
                                                        "stopped one migrates cold)")
    assert (await vmrecords.load(store, spec.uuid))[1].migrate_to is None
    assert await store.count(keys.desired_host("h2")) == 0
