"""SharedMountPoint on two simulated hosts: real agents, real libvirtds, one directory bind-mounted in each
host's own mount namespace.

The storage's record and the desired state under the hosts' streams are written to etcd as the coordinator's
storage API writes them (its reports are stored only while the storage's record exists); what is checked is
what the agents report through the real coordinator and the files.
The shared image cache is tested in test_storage_volumes.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from agentkit.model import (
    KernelBoot,
    PrimaryStorageSpec,
    StoredVolumeSpec,
    VmSpec,
    VolumeDisk,
    VolumeSpec,
    stream_key_storage,
    stream_key_vm,
    stream_key_volume,
)
from coordinator.domain.filestorage.records import FileStorageRecord
from coordinator.etcd import keys
from coordinator.etcd.store import Store
from testbed import guest_image
from testbed.kvmhost import mounting_hosts

pytestmark = [pytest.mark.real, pytest.mark.timeout(400)]
MiB = 1 << 20


@pytest.fixture(scope="module")
def bed(run, coordinator, token):
    """Two hosts whose agents share libvirtd's mount namespace, and the shared directory."""
    guest = guest_image.build()
    shared, url = run.path("smp-backing"), run.path("smp")
    shared.mkdir()
    url.mkdir()  # in the root namespace: an empty directory on this machine's disk, never mounted
    hosts = mounting_hosts(run, coordinator, token, ["kvm1", "kvm2"], [(shared, url)])
    yield hosts, guest, shared, url
    for h in hosts:
        h.close()


async def until(store: Store, key: str, check, timeout: float = 60) -> dict:
    end = time.monotonic() + timeout
    while True:
        entry = await store.get(key)
        if entry is not None and check(entry.value):
            return entry.value
        assert time.monotonic() < end, f"{key}: never as expected; last {entry and entry.value}"
        await asyncio.sleep(0.2)


def vm(uuid: str, volume: str, guest, **kw) -> VmSpec:
    return VmSpec(uuid=uuid, name=f"smp-{uuid[:4]}", memory_mb=256,
                  kernel=KernelBoot(kernel=str(guest.kernel), initrd=str(guest.initrd), cmdline=guest.cmdline("hold")),
                  volumes=[VolumeSpec(uuid=volume, role="root", disk=VolumeDisk(storage_uuid="smp1"))], **kw)


async def test_two_hosts_one_directory_unmounted_on_one_then_mounted_again(bed, etcd):
    hosts, guest, shared, url = bed
    h1, h2 = hosts
    ps = PrimaryStorageSpec(uuid="smp1", name="shared", type="SharedMountPoint", url=str(url))
    store = Store(etcd.endpoint)
    await store.connect()
    try:
        record = FileStorageRecord(uuid=ps.uuid, name=ps.name, type=ps.type, url=ps.url, created_at=time.time())
        await store.put(keys.file_storage(ps.uuid), record.model_dump(mode="json"))
        for h in hosts:
            await store.put(keys.desired_for(h.uuid, stream_key_storage(ps.uuid)), ps.model_dump(mode="json"))
        for h in hosts:  # each sees the other's heartbeat: one filesystem
            await until(store, keys.observed("storage", f"smp1.{h.uuid}"),
                        lambda b: b["state"] == "Ready" and sorted(b["peers"]) == sorted([h1.uuid, h2.uuid]))

        vm1, vm2 = "b1000000-0000-4000-8000-0000000000b1", "b2000000-0000-4000-8000-0000000000b2"
        for h, vol, vm_uuid in ((h1, "sroot1", vm1), (h2, "sroot2", vm2)):
            spec = StoredVolumeSpec(uuid=vol, storage_uuid="smp1", size_bytes=64 * MiB)
            await store.put(keys.desired_for(h.uuid, stream_key_volume(vol)), spec.model_dump(mode="json"))
            await store.put(keys.desired_for(h.uuid, stream_key_vm(vm_uuid)),
                            vm(vm_uuid, vol, guest).model_dump(mode="json"))
            await until(store, keys.observed("vm", vm_uuid), lambda b: b["state"] == "Running", timeout=90)
        assert sorted(p.name for p in (shared / "volumes").iterdir()) == ["sroot1", "sroot2"]  # one directory

        # kvm2 loses the mount: it says so, and its VM cannot start there
        stopped = vm(vm2, "sroot2", guest, state="Stopped", generation=1)
        await store.put(keys.desired_for(h2.uuid, stream_key_vm(vm2)), stopped.model_dump(mode="json"))
        await until(store, keys.observed("vm", vm2), lambda b: b["state"] == "Stopped", timeout=40)
        h2.mount("-u", "--lazy", str(url))  # gone at once, as a lost share is, though a file in it may still be
        # open for a moment (the stopped VM's qemu exiting, a heartbeat being written): a plain umount failed busy
        down = await until(store, keys.observed("storage", f"smp1.{h2.uuid}"), lambda b: b["state"] == "Unavailable")
        assert f"{url} on host kvm2 is not mounted" in down["error"]
        again = vm(vm2, "sroot2", guest, generation=2)
        await store.put(keys.desired_for(h2.uuid, stream_key_vm(vm2)), again.model_dump(mode="json"))
        body = await until(store, keys.observed("vm", vm2), lambda b: "not mounted" in (b.get("error") or ""))
        assert body["state"] != "Running" and f"{url} on host kvm2 is not mounted" in body["error"]
        assert (await store.get(keys.observed("vm", vm1))).value["state"] == "Running"  # kvm1 unaffected

        h2.mount("--bind", str(shared), str(url))
        await until(store, keys.observed("storage", f"smp1.{h2.uuid}"), lambda b: b["state"] == "Ready")
        await until(store, keys.observed("vm", vm2), lambda b: b["state"] == "Running" and not b.get("error"),
                    timeout=60)
    finally:
        for h in hosts:
            await store.delete(keys.desired_host(h.uuid), prefix=True)
        await store.delete(keys.file_storage(ps.uuid))
        await store.close()
