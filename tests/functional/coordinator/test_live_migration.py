"""Live migration through the coordinator: two simulated KVM hosts (real agents and libvirtds, TCG) sharing a
SharedMountPoint, each with its own tmpfs where the serial logs and console sockets go (the same paths
on both, as hosts of one cloud have), their libvirtds reaching each other over TCP.

Checked: a running tiny guest with a data volume on the SharedMountPoint moves live (libvirt peer to
peer): the coordinator shows it on the target, only the target's libvirtd has it, the guest did not boot
again there (no init line in the target's serial log) and answers a volume hot-plugged after the move;
a stopped VM and a VM with a LocalStorage volume are refused with a 409 that says why; a VM deleted while it
moves is gone from both hosts (their views and their libvirtds); a move whose target's agent is stopped is
called off, the VM staying where it runs, and a move asked again once that agent is back goes through; a move
the target prepared for but libvirt keeps refusing is called off too, once the source stopped sending it; and such
a move whose guest powers off meanwhile ends by itself, the VM Stopped on its source.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from coordinator.client import Client
from testbed import guest_image
from testbed.apiwait import refused, until
from testbed.coordinators import Coordinator
from testbed.kvmhost import KvmHost, mounting_hosts

pytestmark = [pytest.mark.real, pytest.mark.timeout(420)]
MiB = 1 << 20


@pytest.fixture(scope="module")
def coordinator(run, etcd, token):
    c = Coordinator(run, etcd, token, name="coord-live", heartbeat_timeout=3, heartbeat_interval=1, leader_ttl=2,
                    live_migration_uri="qemu+tcp://{address}/system").start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def bed(run, coordinator, token):
    shared, smp, local, common = (run.path(n) for n in ("live-backing", "live-smp", "live-local", "live-host"))
    for d in (shared, smp, local, common):
        d.mkdir()
    hosts = mounting_hosts(run, coordinator, token, ["kvm1", "kvm2"], [(shared, smp)],
                           mounts=[("-t", "tmpfs", "-o", "size=64m", "tmpfs", str(common)),
                                   ("-t", "tmpfs", "-o", "size=64m", "tmpfs", str(local))],
                           vm={"serial_log_dir": str(common / "serial"), "console_dir": str(common / "consoles")})
    yield hosts, smp, local, common
    for h in hosts:
        h.close()


def serial(host: KvmHost, common: Path, vm: str) -> str:
    p = host.inside(common / "serial" / f"{vm}.log")
    return p.read_text(errors="replace") if p.exists() else ""


async def storages(api: Client, hosts, smp: Path, local: Path) -> None:
    for name, kind, url in (("live-smp", "SharedMountPoint", smp), ("live-local", "LocalStorage", local)):
        ps = await api.post("/v1/primary-storage", {"name": name, "type": kind, "url": str(url)})
        await until(lambda p=ps: api.get(f"/v1/primary-storage/{p['uuid']}"),
                    lambda s: all((s["hosts"].get(h.uuid) or {}).get("capacity") for h in hosts))


async def test_a_running_guest_on_shared_storage_moves_live(api, bed):
    (h1, h2), smp, local, common = bed
    await storages(api, (h1, h2), smp, local)
    guest = guest_image.build()
    kernel = {"kernel": str(guest.kernel), "initrd": str(guest.initrd), "cmdline": guest.cmdline("hold")}
    vm = await api.post("/v1/vms", {"name": "live", "host_uuid": "kvm1", "primary_storage_uuid": "live-smp",
                                    "data_disks": [8 * MiB], "kernel": kernel}, wait="60")
    assert vm["observed"]["state"] == "Running"
    await until(lambda: asyncio.to_thread(serial, h1, common, vm["uuid"]), lambda t: "HS-HOLD" in t)

    moved = await api.post(f"/v1/vms/{vm['uuid']}/migrate", {"host_uuid": "kvm2", "live": True})
    assert moved["spec"]["migrate_to"]["host"] == h2.uuid
    shown = await until(lambda: api.get(f"/v1/vms/{vm['uuid']}"),
                        lambda v: v["host_uuid"] == h2.uuid and (v["observed"] or {}).get("state") == "Running"
                        and v["observed"].get("host") == h2.uuid)
    assert shown["spec"]["migrate_to"] is None and shown["spec"]["incoming"] is None
    await until(lambda: asyncio.to_thread(h1.libvirt.virsh, "list", "--all", "--name"), lambda out: not out.split(),
                30)  # libvirt ends the job on the source a moment after the guest runs on the target
    assert h2.libvirt.virsh("list", "--name").split() == [vm["uuid"]]
    assert (await api.get(f"/v1/volumes/{vm['spec']['volumes'][0]['uuid']}"))["host_uuid"] == h2.uuid

    extra = await api.post("/v1/volumes", {"name": "after", "primary_storage_uuid": "live-smp", "size": 4 * MiB})
    await until(lambda: api.get(f"/v1/volumes/{extra['uuid']}"), lambda v: v["status"] == "Ready")
    await api.post(f"/v1/vms/{vm['uuid']}/volumes", {"volume_uuid": extra["uuid"]})
    text = await until(lambda: asyncio.to_thread(serial, h2, common, vm["uuid"]),
                       lambda t: re.search(rf"HS-DISK vd\w serial={extra['uuid'][:20]}", t))
    assert "HS-INIT-START" not in text  # the same guest, not a new boot
    await api.delete(f"/v1/vms/{vm['uuid']}", wait="30")


async def test_what_cannot_move_live_is_refused_with_why(api, bed):
    guest = guest_image.build()
    kernel = {"kernel": str(guest.kernel), "initrd": str(guest.initrd), "cmdline": guest.cmdline("hold")}
    vm = await api.post("/v1/vms", {"name": "local", "host_uuid": "kvm1", "primary_storage_uuid": "live-local",
                                    "data_disks": [4 * MiB], "kernel": kernel}, wait="60")
    e = await refused(api.post(f"/v1/vms/{vm['uuid']}/migrate", {"host_uuid": "kvm2", "live": True}), 409,
                      "invalid_state")
    assert "is on LocalStorage live-local: live migration needs storage both hosts reach" in e.message
    await api.post(f"/v1/vms/{vm['uuid']}/actions", {"action": "stop"}, wait="30")
    e = await refused(api.post(f"/v1/vms/{vm['uuid']}/migrate", {"host_uuid": "kvm2", "live": True}), 409,
                      "not_running")
    assert "only a running VM migrates live" in e.message
    await api.delete(f"/v1/vms/{vm['uuid']}", wait="30")


async def test_a_vm_deleted_while_it_moves_live_is_gone_from_both_hosts(api, bed):
    (h1, h2), _, _, _ = bed
    guest = guest_image.build()
    kernel = {"kernel": str(guest.kernel), "initrd": str(guest.initrd), "cmdline": guest.cmdline("hold")}
    vm = await api.post("/v1/vms", {"name": "gone", "host_uuid": "kvm1", "kernel": kernel}, wait="60")
    moved = await api.post(f"/v1/vms/{vm['uuid']}/migrate", {"host_uuid": "kvm2", "live": True})
    assert moved["spec"]["migrate_to"]["host"] == h2.uuid
    await api.delete(f"/v1/vms/{vm['uuid']}")  # whatever the move is at: not begun, under way, arrived
    assert [h["vms"] for h in (await api.get("/v1/capacity"))["hosts"] if h["host_uuid"] in (h1.uuid, h2.uuid)] \
        == [0, 0]
    for host in (h1, h2):  # a domain that arrived unnoticed goes at the target's next resync at the latest
        await until(lambda h=host: asyncio.to_thread(h.libvirt.virsh, "list", "--all", "--name"),
                    lambda out: vm["uuid"] not in out.split(), 90)


async def test_a_move_its_target_does_not_prepare_for_is_called_off_and_the_vm_runs_on(api, bed):
    (h1, h2), _, _, common = bed
    guest = guest_image.build()
    kernel = {"kernel": str(guest.kernel), "initrd": str(guest.initrd), "cmdline": guest.cmdline("hold")}
    vm = await api.post("/v1/vms", {"name": "stays", "host_uuid": "kvm1", "kernel": kernel}, wait="60")
    domain = h1.libvirt.virsh("domid", vm["uuid"]).strip()
    target = h2.agent
    assert target is not None
    target.send_signal(signal.SIGSTOP)  # its agent stuck: it cannot prepare
    try:
        moving = await api.post(f"/v1/vms/{vm['uuid']}/migrate", {"host_uuid": "kvm2", "live": True})
        assert moving["spec"]["migrate_to"]["prepared"] is False
        kept = await api.delete(f"/v1/vms/{vm['uuid']}/migrate")
        assert kept["host_uuid"] == h1.uuid and kept["spec"]["migrate_to"] is None
        assert [h["vms"] for h in (await api.get("/v1/capacity"))["hosts"] if h["host_uuid"] == h2.uuid] == [0]
        e = await refused(api.delete(f"/v1/vms/{vm['uuid']}/migrate"), 409, "invalid_state")
        assert e.message == "VM stays is not moving live"
    finally:
        target.send_signal(signal.SIGCONT)
    assert h1.libvirt.virsh("domid", vm["uuid"]).strip() == domain  # the same qemu ran on, untouched
    # once back, the target finds nothing to prepare; asked again, the move goes through
    await api.post(f"/v1/vms/{vm['uuid']}/migrate", {"host_uuid": "kvm2", "live": True})
    await until(lambda: api.get(f"/v1/vms/{vm['uuid']}"),
                lambda v: v["host_uuid"] == h2.uuid and (v["observed"] or {}).get("host") == h2.uuid
                and v["observed"].get("state") == "Running")
    assert "HS-INIT-START" not in await asyncio.to_thread(serial, h2, common, vm["uuid"])  # moved, not booted
    await api.delete(f"/v1/vms/{vm['uuid']}", wait="30")


@contextlib.asynccontextmanager
async def refused_move(api: Client, bed, name: str) -> AsyncIterator[tuple[dict[str, Any], re.Pattern[str]]]:
    """A running guest on kvm1 moving live to kvm2, which prepared for it, once its first try failed: the VM and
    the source's log line of a failed try. libvirt refuses every try until the block ends (the target's qemu
    cannot open the VM's serial log, a directory there); the source tries again with backoff."""
    (h1, h2), _, _, common = bed
    guest = guest_image.build()
    kernel = {"kernel": str(guest.kernel), "initrd": str(guest.initrd), "cmdline": guest.cmdline("hold")}
    vm = await api.post("/v1/vms", {"name": name, "host_uuid": "kvm1", "kernel": kernel}, wait="60")
    await until(lambda: asyncio.to_thread(serial, h1, common, vm["uuid"]), lambda t: "HS-HOLD" in t)
    blocker = h2.inside(common / "serial" / f"{vm['uuid']}.log")
    blocker.mkdir(parents=True)
    try:
        await api.post(f"/v1/vms/{vm['uuid']}/migrate", {"host_uuid": "kvm2", "live": True})
        failed = re.compile(rf"vm {vm['uuid']}: live migration \w+ failed")
        await until(lambda: asyncio.to_thread(h1.log), lambda log: failed.search(log), 60)
        yield vm, failed
    finally:
        blocker.rmdir()
    await api.delete(f"/v1/vms/{vm['uuid']}", wait="30")


async def test_a_move_libvirt_keeps_refusing_is_called_off_and_the_vm_runs_on(api, bed):
    """Called off, the source tries no more and reports the VM kept: the move ends with the same qemu on the
    source and nothing on the target."""
    (h1, h2), _, _, _ = bed
    async with refused_move(api, bed, "refused") as (vm, failed):
        domain = h1.libvirt.virsh("domid", vm["uuid"]).strip()
        why = await until(lambda: api.get(f"/v1/vms/{vm['uuid']}"), lambda v: (v["observed"] or {}).get("error"))
        assert why["observed"]["state"] == "Running" and why["host_uuid"] == h1.uuid
        assert why["observed"]["error"].startswith(f"live migration to host {h2.uuid} failed: ")
        aborting = await api.delete(f"/v1/vms/{vm['uuid']}/migrate")
        assert aborting["host_uuid"] == h1.uuid and aborting["spec"]["migrate_to"]["abort"] is True
        ended = await until(lambda: api.get(f"/v1/vms/{vm['uuid']}"), lambda v: v["spec"]["migrate_to"] is None, 60)
        assert ended["host_uuid"] == h1.uuid and ended["observed"]["state"] == "Running"
        assert ended["observed"].get("error") is None
        assert [h["vms"] for h in (await api.get("/v1/capacity"))["hosts"] if h["host_uuid"] == h2.uuid] == [0]
        assert h1.libvirt.virsh("domid", vm["uuid"]).strip() == domain  # the same qemu ran on
        assert vm["uuid"] not in h2.libvirt.virsh("list", "--all", "--name").split()
        tries = len(failed.findall(h1.log()))
        await asyncio.sleep(5)  # longer than the next try's backoff: none comes
        assert len(failed.findall(h1.log())) == tries


async def test_a_move_whose_guest_powers_off_before_it_was_sent_ends_with_the_vm_stopped_on_its_source(api, bed):
    """The guest powers itself off on the source (ACPI) while libvirt refuses its send: the move ends unasked, the
    VM shown Stopped on its source as after any out-of-band stop (the agents' default policy adopts it), nothing
    of it left on the target."""
    (h1, h2), _, _, common = bed
    async with refused_move(api, bed, "poweroff") as (vm, _):
        h1.libvirt.virsh("shutdown", vm["uuid"])  # between two tries (the next in 2 s)
        ended = await until(lambda: api.get(f"/v1/vms/{vm['uuid']}"), lambda v: v["spec"]["migrate_to"] is None, 60)
        assert ended["host_uuid"] == h1.uuid and ended["spec"]["state"] == "Stopped"
        assert [h["vms"] for h in (await api.get("/v1/capacity"))["hosts"] if h["host_uuid"] == h2.uuid] == [0]
        shown = await until(lambda: api.get(f"/v1/vms/{vm['uuid']}"),
                            lambda v: (v["observed"] or {}).get("state") == "Stopped", 30)
        assert shown["observed"]["host"] == h1.uuid and shown["observed"].get("error") is None
        assert "HS-ACPI-POWERBUTTON" in await asyncio.to_thread(serial, h1, common, vm["uuid"])
        await asyncio.sleep(2)
        assert h1.libvirt.virsh("domstate", vm["uuid"]).strip() == "shut off"  # not started again
        assert vm["uuid"] not in h2.libvirt.virsh("list", "--all", "--name").split()
