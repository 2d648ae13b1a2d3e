"""File-based primary storage through the coordinator API and `hs`: a real coordinator on etcd, two simulated
KVM hosts (real agents in their libvirtd's mount namespace, real libvirtds): a small LocalStorage on a
tmpfs mounted on one host, a SharedMountPoint bind-mounted on both.

Checked: per-host reports and reservations in the API, the capacity 409 with its figures and the space
returned by a delete, over-provisioning, a VM placed where its volumes fit, volumes attached live to its
guest, snapshotted, detached, reverted, and the shared mount lost and found again on one host.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import subprocess
import sys

import pytest

from coordinator.client import Client
from coordinator.etcd import keys
from coordinator.etcd.store import Store
from testbed import guest_image
from testbed.apiwait import refused, until
from testbed.kvmhost import mounting_hosts

pytestmark = [pytest.mark.real, pytest.mark.timeout(420)]
MiB = 1 << 20


@pytest.fixture(scope="module")
def bed(run, coordinator, token):
    small, shared, smp = run.path("ls-small"), run.path("smp-backing"), run.path("smp")
    for d in (small, shared, smp):
        d.mkdir()
    hosts = mounting_hosts(run, coordinator, token, ["kvm1", "kvm2"], [(shared, smp)])
    hosts[0].mount("-t", "tmpfs", "-o", "size=256m", "tmpfs", str(small))
    yield hosts, small, smp, shared
    for h in hosts:
        h.close()


async def test_capacity_is_reserved_refused_with_figures_and_returned(api, bed, etcd):
    (h1, h2), small, _, _ = bed
    ps = await api.post("/v1/primary-storage", {"name": "small", "type": "LocalStorage", "url": str(small),
                                                "host_uuids": ["kvm1"]})
    shown = await until(lambda: api.get(f"/v1/primary-storage/{ps['uuid']}"),
                        lambda s: (s["hosts"].get(h1.uuid) or {}).get("capacity"))
    assert list(shown["hosts"]) == [h1.uuid] and shown["hosts"][h1.uuid]["capacity"]["total"] == 256 * MiB

    a = await api.post("/v1/volumes", {"name": "a", "primary_storage_uuid": "small", "size": 200 * MiB})
    assert a["host_uuid"] == h1.uuid and a["size"] == 200 * MiB and a["disk"] == {"kind": "volume",
                                                                                 "storage_uuid": ps["uuid"]}
    e = await refused(api.post("/v1/volumes", {"name": "b", "primary_storage_uuid": "small", "size": 100 * MiB}),
                      409, "insufficient_capacity")
    assert "primary storage small on host kvm1 cannot take 100 MiB" in e.message
    assert f"56 MiB ({56 * MiB} bytes) of 256 MiB left" in e.message and e.field == "size"
    assert (await api.get(f"/v1/primary-storage/{ps['uuid']}"))["hosts"][h1.uuid]["reserved"] == 200 * MiB

    await api.put("/v1/global-configs/mevoco/overProvisioning.primaryStorage", {"value": "2.0"})
    b = await api.post("/v1/volumes", {"name": "b", "primary_storage_uuid": "small", "size": 100 * MiB})
    await api.put("/v1/global-configs/mevoco/overProvisioning.primaryStorage", {"value": "1.0"})
    await api.delete(f"/v1/volumes/{b['uuid']}")

    ready = await until(lambda: api.get(f"/v1/volumes/{a['uuid']}"), lambda v: v["status"] == "Ready")
    assert ready["observed"]["path"].startswith(f"{small}/volumes/{a['uuid']}/")
    await api.delete(f"/v1/volumes/{a['uuid']}")
    assert (await api.get(f"/v1/primary-storage/{ps['uuid']}"))["hosts"][h1.uuid]["reserved"] == 0
    c = await api.post("/v1/volumes", {"name": "c", "primary_storage_uuid": "small", "size": 100 * MiB})
    await api.delete(f"/v1/volumes/{c['uuid']}")
    store = Store(etcd.endpoint)
    await store.connect()
    try:  # the host reports the files gone: the tombstones leave its stream
        for vol in (a, b, c):
            await until(lambda v=vol: store.get(keys.desired_for(h1.uuid, f"volume/{v['uuid']}")), lambda e: e is None)
    finally:
        await store.close()
    await refused(api.post("/v1/volumes", {"name": "d", "primary_storage_uuid": "small", "size": MiB,
                                           "host_uuid": "kvm2"}), 409, "storage_unavailable")
    vm = await api.post("/v1/vms", {"name": "local", "primary_storage_uuid": "small", "data_disks": [MiB],
                                    "state": "Stopped"})
    assert vm["host_uuid"] == h1.uuid  # the only host the storage is attached to
    e = await refused(api.post(f"/v1/vms/{vm['uuid']}/migrate", {"host_uuid": "kvm2"}), 409, "storage_unavailable")
    assert "primary storage small is not attached to host kvm2" in e.message  # its volumes cannot go there
    await api.delete(f"/v1/vms/{vm['uuid']}")
    for v in (await api.get("/v1/volumes", primary_storage_uuid=ps["uuid"]))["volumes"]:
        await api.delete(f"/v1/volumes/{v['uuid']}")
    await api.delete(f"/v1/primary-storage/{ps['uuid']}")


async def test_volumes_of_a_shared_mount_point_under_a_running_guest(api, bed, coordinator, token):
    (h1, h2), _, smp, shared = bed
    guest = guest_image.build()
    ps = await api.post("/v1/primary-storage", {"name": "shared", "type": "SharedMountPoint", "url": str(smp)})
    both = sorted([h1.uuid, h2.uuid])
    await until(lambda: api.get(f"/v1/primary-storage/{ps['uuid']}"),
                lambda s: all(sorted(s["hosts"].get(h, {}).get("peers") or []) == both for h in both))

    vm = await api.post("/v1/vms", {"name": "smpvm", "host_uuid": "kvm2", "primary_storage_uuid": "shared",
                                    "data_disks": [16 * MiB], "kernel": {
                                        "kernel": str(guest.kernel), "initrd": str(guest.initrd),
                                        "cmdline": guest.cmdline("hold")}}, wait="60")
    assert vm["host_uuid"] == h2.uuid and vm["observed"]["state"] == "Running"
    first = vm["spec"]["volumes"][0]
    assert first["disk"] == {"kind": "volume", "storage_uuid": ps["uuid"]}
    serial = h2.libvirt.dir / "serial" / f"{vm['uuid']}.log"
    await until(lambda: _text(serial), lambda t: f"serial={first['uuid'][:20]}" in t)

    extra = await api.post("/v1/volumes", {"name": "extra", "primary_storage_uuid": "shared", "size": 8 * MiB,
                                           "host_uuid": "kvm1"})
    await api.post(f"/v1/vms/{vm['uuid']}/volumes", {"volume_uuid": extra["uuid"]})  # follows the VM to kvm2
    await until(lambda: _text(serial), lambda t: re.search(rf"HS-DISK vd\w serial={extra['uuid'][:20]}", t))
    assert (await api.get(f"/v1/volumes/{extra['uuid']}"))["host_uuid"] == h2.uuid
    await api.post(f"/v1/volumes/{extra['uuid']}/snapshots", {"name": "before"})
    await until(lambda: api.get(f"/v1/volumes/{extra['uuid']}"),
                lambda v: (v["observed"] or {}).get("snapshots") == [v["snapshots"][0]["uuid"]])
    e = await refused(api.post(f"/v1/volumes/{extra['uuid']}/snapshots/before/rollback"), 409, "invalid_state")
    assert "stop it first" in e.message
    await asyncio.to_thread(hs, coordinator, token, "volume", "detach", "extra")  # from the VM it is attached to
    with pytest.raises(AssertionError, match="hs: volume extra is not attached to a VM"):
        await asyncio.to_thread(hs, coordinator, token, "volume", "detach", "extra")
    reverted = await api.post(f"/v1/volumes/{extra['uuid']}/snapshots/before/rollback")
    await until(lambda: api.get(f"/v1/volumes/{extra['uuid']}"),
                lambda v: (v["observed"] or {}).get("revert_seq") == reverted["revert"]["seq"])
    assert (shared / "volumes" / extra["uuid"]).is_dir()  # one directory, seen from every host

    # kvm1 loses the mount: it says so, nothing new is placed there, and it recovers when mounted again
    h1.mount("-u", str(smp))
    down = await until(lambda: api.get(f"/v1/primary-storage/{ps['uuid']}"),
                       lambda s: s["hosts"][h1.uuid]["state"] == "Unavailable")
    assert f"{smp} on host kvm1 is not mounted" in down["hosts"][h1.uuid]["error"]
    e = await refused(api.post("/v1/volumes", {"name": "x", "primary_storage_uuid": "shared", "size": MiB,
                                               "host_uuid": "kvm1"}), 409, "storage_unavailable")
    assert "not usable on host kvm1" in e.message and "not mounted" in e.message
    h1.mount("--bind", str(shared), str(smp))
    await until(lambda: api.get(f"/v1/primary-storage/{ps['uuid']}"), lambda s: s["hosts"][h1.uuid]["state"] == "Ready")

    moved = await api.post(f"/v1/vms/{vm['uuid']}/migrate", {"host_uuid": "kvm1"})  # cold; its volume follows
    assert moved["host_uuid"] == h1.uuid
    assert (await api.get(f"/v1/volumes/{first['uuid']}"))["host_uuid"] == h1.uuid
    await until(lambda: api.get(f"/v1/vms/{vm['uuid']}"), lambda v: (v["observed"] or {}).get("state") == "Running"
                and v["observed"].get("host") == h1.uuid)
    await api.delete(f"/v1/vms/{vm['uuid']}", wait="30")  # its data disk (made with it) is detached, not deleted
    for vol in await _volumes(api, ps["uuid"]):
        await api.delete(f"/v1/volumes/{vol['uuid']}")
    await until(lambda: _volumes(api, ps["uuid"]), lambda vols: not vols)
    await api.delete(f"/v1/primary-storage/{ps['uuid']}")


async def _volumes(api: Client, ps: str) -> list[dict]:
    return (await api.get("/v1/volumes", primary_storage_uuid=ps))["volumes"]


async def _text(path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def hs(coordinator, token, *args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "coordinator.cli", "--url", coordinator.url, f"--token={token}", *args],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


async def test_hs_storage_and_volume_commands(api, bed, coordinator, token):
    (h1, h2), _, smp, _ = bed
    run = functools.partial(asyncio.to_thread, hs, coordinator, token)
    await run("storage", "add-smp", "cli-smp", str(smp))
    await until(lambda: api.get("/v1/primary-storage/cli-smp"),
                lambda s: all((s["hosts"].get(h.uuid) or {}).get("capacity") for h in (h1, h2)))
    assert "cli-smp" in await run("storage", "list")
    shown = json.loads(await run("--json", "storage", "show", "cli-smp"))
    assert shown["type"] == "SharedMountPoint" and set(shown["hosts"]) == {h1.uuid, h2.uuid}
    vol = json.loads(await run("--json", "volume", "create", "cli-vol", "--primary-storage", "cli-smp",
                               "--size", "4M"))
    assert vol["size"] == 4 * MiB and vol["type"] == "Data"
    await run("volume", "snapshot", "cli-vol", "s1")
    await run("volume", "resize", "cli-vol", "8M")
    row = next(line for line in (await run("volume", "list")).splitlines() if vol["uuid"] in line)
    host = await api.get(f"/v1/hosts/{vol['host_uuid']}")
    assert row.split()[1:7] == ["cli-vol", "Data", "cli-smp", host["name"], "-", "8"], row  # names; no VM
    await run("volume", "revert", "cli-vol", "s1")
    await run("volume", "delete-snapshot", "cli-vol", "s1")
    await run("volume", "delete", "cli-vol")
    await run("storage", "delete", "cli-smp")
    assert "cli-smp" not in await run("storage", "list")
