"""LocalStorage volume migration and cold VM migration through the coordinator: a real coordinator on etcd,
an image store, two simulated KVM hosts (real agents in their libvirtd's mount namespace, real libvirtds),
each with its own tmpfs at the same LocalStorage path, their agents reaching each other's API.

Checked: a stopped VM made from an image, with known content on its root volume and on a data volume
with a snapshot (a chain of two files), cold-migrated with the target's agent killed mid-copy: identical
checksums on the target, the source's files gone, the guest boots there and sees its data; a detached
data volume migrated back with `hs volume migrate --progress` with the source's agent killed mid-copy;
each seed rule refused with a 409 that says why.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agentkit.proc import run as run_cmd
from coordinator.client import Client
from testbed import guest_image
from testbed.apiwait import refused, until
from testbed.coordinators import Coordinator
from testbed.imagestore import ImageStoreProcess
from testbed.kvmhost import KvmHost, mounting_hosts
from testbed.ports import free_port

pytestmark = [pytest.mark.real, pytest.mark.timeout(600)]
MiB = 1 << 20
BIG = 384 * MiB  # written to the data volume: enough for a kill to land mid-copy


@pytest.fixture(scope="module")
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture(scope="module")
def coordinator(run, etcd, token, ports):
    agent_port, store_port = ports
    c = Coordinator(run, etcd, token, name="coord-migrate", heartbeat_timeout=3, heartbeat_interval=1, leader_ttl=2,
                    kvmagent_port=agent_port, imagestore_port=store_port).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def bed(run, coordinator, token, ports):
    agent_port, store_port = ports
    local, shared, smp = run.path("ls-mig"), run.path("smp-mig-backing"), run.path("smp-mig")
    for d in (local, shared, smp):
        d.mkdir()
    guest = guest_image.build()

    async def register_store() -> dict:
        async with Client(coordinator.url, token) as api:
            return await api.post("/v1/hosts", {"name": "store", "address": "127.0.0.1", "kind": "imagestore"})
    store_host = asyncio.run(register_store())
    store = ImageStoreProcess(run, run.path("mig-store"), "127.0.0.1", store_port, file_roots=[guest.disk.parent],
                              token=store_host["token"]).start()
    hosts = mounting_hosts(run, coordinator, token, ["kvm1", "kvm2"], [(shared, smp)], api_port=agent_port,
                           mounts=[("-t", "tmpfs", "-o", "size=1g", "tmpfs", str(local))],
                           storage={"check_interval": 1, "migrate_retry": 1, "fetch_retries": 2})
    for h in hosts:
        h.relay(store_port)
    yield hosts, local, smp, guest
    for h in hosts:
        h.close()
    store.stop()


def sums(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("f*.qcow2"))}


def kill_when_copying(host: KvmHost, part: Path, timeout: float = 120) -> int:
    """SIGKILL the host's agent once `part` (a partial file of a copy) holds some bytes but not all;
    the bytes it held."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        size = part.stat().st_size if part.exists() else 0
        if size > 8 * MiB:
            host.kill_agent()
            return size
        time.sleep(0.005)
    raise AssertionError(f"{part} never grew")


def qemu_io_read(path: Path, pattern: int, offset: int, length: int) -> None:
    out = run_cmd(["qemu-io", "-r", "-f", "qcow2", "-c", f"read -P {pattern} {offset} {length}", str(path)]).stdout
    assert "Pattern verification failed" not in out, out


@pytest.fixture(scope="module")
def image(bed, coordinator, token):
    _, _, _, guest = bed

    async def add() -> dict:
        async with Client(coordinator.url, token) as api:
            await api.post("/v1/image-stores", {"name": "mig-is", "host": "store"})
            img = await api.post("/v1/images", {"name": "tiny", "url": f"file://{guest.disk}",
                                                "backup_storage_uuid": "mig-is", "format": "raw"})
            return await until(lambda: api.get(f"/v1/images/{img['uuid']}"), lambda i: i["status"] == "Ready")
    return asyncio.run(add())


async def test_cold_migration_moves_the_stopped_vm_with_its_volumes_through_a_target_crash(api, bed, image):
    (h1, h2), local, _, _ = bed
    ps = await api.post("/v1/primary-storage", {"name": "local", "type": "LocalStorage", "url": str(local)})
    await until(lambda: api.get(f"/v1/primary-storage/{ps['uuid']}"),
                lambda s: all((s["hosts"].get(h.uuid) or {}).get("capacity") for h in (h1, h2)))
    vm = await api.post("/v1/vms", {"name": "mig", "host_uuid": "kvm1", "image_uuid": image["uuid"],
                                    "primary_storage_uuid": "local", "root_size": 64 * MiB,
                                    "data_disks": [512 * MiB], "state": "Stopped"})
    root, data = (v["uuid"] for v in vm["spec"]["volumes"])
    for vol in (root, data):
        await until(lambda v=vol: api.get(f"/v1/volumes/{v}"), lambda v: v["status"] == "Ready")
    src = {v: h1.inside(local / "volumes" / v) for v in (root, data)}
    run_cmd(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 60M 2M", str(src[root] / "f0.qcow2")])
    run_cmd(["qemu-io", "-f", "qcow2", "-c", "write -P 0x41 0 64k", "-c", f"write -P 0x33 1M {BIG}",
             str(src[data] / "f0.qcow2")])
    await api.post(f"/v1/volumes/{data}/snapshots", {"name": "before"})  # the chain: f0 <- f1
    await until(lambda: api.get(f"/v1/volumes/{data}"), lambda v: len((v["observed"] or {}).get("snapshots") or []))
    run_cmd(["qemu-io", "-f", "qcow2", "-c", "write -P 0x77 400M 4M", str(src[data] / "f1.qcow2")])

    # the VM runs: its local volumes cannot move (live migration wants shared storage)
    await api.post(f"/v1/vms/{vm['uuid']}/actions", {"action": "start"})
    await until(lambda: api.get(f"/v1/vms/{vm['uuid']}"), lambda v: (v["observed"] or {}).get("state") == "Running")
    e = await refused(api.post(f"/v1/vms/{vm['uuid']}/migrate", {"host_uuid": "kvm2"}), 409, "invalid_state")
    assert "VM mig is Running" in e.message and "only while it is stopped" in e.message
    e = await refused(api.post(f"/v1/volumes/{root}/migrate", {"dest_host_uuid": "kvm2"}), 409, "invalid_state")
    assert "root volume mig-root migrates only while its VM is stopped" in e.message
    e = await refused(api.post(f"/v1/volumes/{data}/migrate", {"dest_host_uuid": "kvm2"}), 409, "in_use")
    assert f"is attached to VM mig ({vm['uuid']}): a data volume migrates only while detached" in e.message
    await api.post(f"/v1/vms/{vm['uuid']}/actions", {"action": "stop"}, wait="30")
    before = {v: sums(src[v]) for v in (root, data)}
    assert len(before[data]) == 2

    moved = await api.post(f"/v1/vms/{vm['uuid']}/migrate", {"host_uuid": "kvm2"})
    assert moved["host_uuid"] == h1.uuid  # it waits for its volumes
    assert moved["observed"]["state"] == "Stopped"  # the answer shows the VM as it is, as every action's does
    shown = await api.get(f"/v1/volumes/{data}")
    assert shown["migration"]["target"] == h2.uuid and shown["progress"]["state"] in ("Waiting", "Copying")
    e = await refused(api.post(f"/v1/vms/{vm['uuid']}/actions", {"action": "start"}), 409, "invalid_state")
    assert f"is migrating to host kvm2 ({h2.uuid}): start VM mig once it is there" in e.message
    await refused(api.post(f"/v1/volumes/{data}/snapshots", {"name": "during"}), 409, "invalid_state")
    held = await asyncio.to_thread(kill_when_copying, h2, h2.inside(local / "volumes" / data / ".f0.part"))
    assert held < BIG
    await asyncio.sleep(1)
    h2.restart_agent()

    await until(lambda: api.get(f"/v1/vms/{vm['uuid']}"), lambda v: v["host_uuid"] == h2.uuid, timeout=180)
    for vol in (root, data):
        shown = await api.get(f"/v1/volumes/{vol}")
        assert shown["host_uuid"] == h2.uuid and shown["migration"] is None and shown["progress"] is None
        assert sums(h2.inside(local / "volumes" / vol)) == before[vol]
        await until(lambda v=vol: asyncio.to_thread(src[v].exists), lambda there: not there)  # source copy gone
    dst = h2.inside(local / "volumes" / data)
    qemu_io_read(dst / "f1.qcow2", 0x33, 1 * MiB, 64 * MiB)
    qemu_io_read(dst / "f1.qcow2", 0x77, 400 * MiB, 4 * MiB)
    qemu_io_read(h2.inside(local / "volumes" / root) / "f0.qcow2", 0x5a, 60 * MiB, 2 * MiB)
    assert (h2.inside(local / "images" / image["uuid"]) / "image.raw").exists()  # cached there, not copied

    await api.post(f"/v1/vms/{vm['uuid']}/actions", {"action": "start"})
    serial = h2.libvirt.dir / "serial" / f"{vm['uuid']}.log"
    await until(lambda: asyncio.to_thread(lambda: serial.read_text(errors="replace") if serial.exists() else ""),
                lambda t: f"serial={data[:20]}" in t and "head=AAAAAAAAAAAAAAAA" in t and "HS-READY" in t)
    await api.post(f"/v1/vms/{vm['uuid']}/actions", {"action": "stop"}, wait="30")


async def named_vm(api: Client, name: str) -> dict:
    return next(v for v in (await api.get("/v1/vms"))["vms"] if v["spec"]["name"] == name)


async def volume_named(api: Client, name: str) -> dict:
    return next(v for v in (await api.get("/v1/volumes"))["volumes"] if v["name"] == name)


def hs(coordinator, token, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coordinator.cli", "--url", coordinator.url, f"--token={token}",
                           *args], capture_output=True, text=True, timeout=300)


async def test_a_detached_volume_goes_back_through_a_source_crash_with_progress(api, bed, coordinator, token):
    (h1, h2), local, _, _ = bed
    vm = await named_vm(api, "mig")
    data = vm["spec"]["volumes"][1]["uuid"]
    before = sums(h2.inside(local / "volumes" / data))
    await api.delete(f"/v1/vms/{vm['uuid']}/volumes/{data}")
    done: list[subprocess.CompletedProcess[str]] = []
    cli = threading.Thread(target=lambda: done.append(hs(coordinator, token, "volume", "migrate", data, "kvm1",
                                                         "--progress")))
    cli.start()
    await asyncio.to_thread(kill_when_copying, h2, h1.inside(local / "volumes" / data / ".f0.part"))
    await asyncio.sleep(3)  # the target's tries fail meanwhile, and it keeps trying
    shown = await api.get(f"/v1/volumes/{data}")
    assert shown["host_uuid"] == h2.uuid and shown["migration"]["target"] == h1.uuid
    h2.restart_agent()
    await asyncio.to_thread(cli.join, 240)
    assert done and done[0].returncode == 0, done
    assert "Migrated" in done[0].stderr and "#" in done[0].stderr
    shown = await api.get(f"/v1/volumes/{data}")
    assert shown["host_uuid"] == h1.uuid and shown["status"] == "Ready"
    assert sums(h1.inside(local / "volumes" / data)) == before
    await until(lambda: asyncio.to_thread(h2.inside(local / "volumes" / data).exists), lambda there: not there)
    assert "resuming" in h1.log()  # the copy went on from where it was


async def test_volumes_that_cannot_move_are_refused_with_why(api, bed):
    (h1, h2), _, smp, _ = bed
    ps = await api.post("/v1/primary-storage", {"name": "smp-mig", "type": "SharedMountPoint", "url": str(smp)})
    await until(lambda: api.get(f"/v1/primary-storage/{ps['uuid']}"),
                lambda s: all((s["hosts"].get(h.uuid) or {}).get("capacity") for h in (h1, h2)))
    vol = await api.post("/v1/volumes", {"name": "shared-vol", "primary_storage_uuid": "smp-mig", "size": MiB})
    e = await refused(api.post(f"/v1/volumes/{vol['uuid']}/migrate", {"dest_host_uuid": "kvm1"}), 409,
                      "invalid_state")
    assert "is on SharedMountPoint smp-mig: every host attached to it reaches its files" in e.message
    data = (await volume_named(api, "mig-1"))["uuid"]  # detached, on kvm1 since the last test
    filler = await api.post("/v1/volumes", {"name": "filler", "primary_storage_uuid": "local", "size": 500 * MiB,
                                            "host_uuid": "kvm2"})
    e = await refused(api.post(f"/v1/volumes/{data}/migrate", {"dest_host_uuid": "kvm2"}), 409,
                      "insufficient_capacity")
    assert "primary storage local on host kvm2 cannot take 512 MiB" in e.message
    for v in (vol, filler):
        await api.delete(f"/v1/volumes/{v['uuid']}")
