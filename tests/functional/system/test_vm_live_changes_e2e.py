"""Changes to running VMs through the API and the CLI (issue 17): NIC hot-plug, reboot, the boot order
after an ISO install, API changes reaching running guests (DHCP attached later, the global cache
mode, a deleted user-data tag, SetVmBootOrder then reboot), and out-of-band changes adopted by default.

One simulated KVM host (the real agent, a private libvirtd, TCG) running the tiny guest. What is
asserted is what the guest prints on its serial console, what etcd holds, what the host's
namespaces hold and libvirt's id of the guest's qemu (a new one at every start).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agentkit.model import NicSpec
from coordinator.client import Client
from coordinator.etcd import keys
from testbed import guest_image, nshttp
from testbed.kvmhost import KvmHost
from testbed.switch import Switch
from testbed.vmns import VmNs

pytestmark = [pytest.mark.real, pytest.mark.timeout(420)]
BOOT = 180  # seconds for the tiny guest to boot under TCG on a loaded machine


class World:
    """One host with two L2s: `flat` (DHCP, DNS, user-data), `second` (DHCP) and `bare` (no services)."""

    def __init__(self, run, coordinator, token):
        self.run, self.coordinator, self.token = run, coordinator, token
        self.host = KvmHost(run, Switch(run), "hvl", Switch(run, "swl2"))

    async def setup(self, api: Client) -> None:
        await self.host.register(api)
        self.host.start(self.coordinator)
        l2a = await api.post("/v1/l2-networks", {"name": "la", "physical_interface": "eth1"})
        l2b = await api.post("/v1/l2-networks", {"name": "lb", "physical_interface": "eth2"})
        self.flat = await self._l3(api, "flat", l2a, ["DHCP", "DNS", "Userdata"])
        self.second = await self._l3(api, "second", l2b, ["DHCP"])
        self.bare = await self._l3(api, "bare", l2a, [])

    async def _l3(self, api: Client, name: str, l2: dict, services: list[str]) -> dict:
        net = self.run.subnet()
        return await api.post("/v1/l3-networks", {
            "name": name, "l2_uuid": l2["uuid"], "cidr": str(net), "gateway": str(net[1]),
            "ip_ranges": [{"start": str(net[10]), "end": str(net[200])}], "services": services})

    def hs(self, *args: str) -> Any:
        """The CLI as a user runs it; its --json answer."""
        p = subprocess.run([sys.executable, "-m", "coordinator.cli", "--url", self.coordinator.url,
                            f"--token={self.token}", "--json", *args], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout) if p.stdout.strip() else None

    def serial(self, vm_uuid: str) -> str:
        path = self.host.libvirt.dir / "serial" / f"{vm_uuid}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def serial_has(self, vm_uuid: str, pattern: str, timeout: float = BOOT, count: int = 1) -> str:
        """The serial log once `pattern` (a regex) appears in it `count` times."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.serial(vm_uuid)
            if len(re.findall(pattern, text)) >= count:
                return text
            assert time.monotonic() < deadline, f"{pattern!r} x{count} not in the serial log of {vm_uuid}:\n{text}"
            await asyncio.sleep(0.5)

    def domain_id(self, vm_uuid: str) -> int:
        """The id libvirt gives the VM's running qemu: a new one at every start, kept across a reboot from
        inside the guest."""
        return int(self.host.libvirt.virsh("domid", vm_uuid))

    def flat_ns(self, l3: dict) -> str:
        """The namespace of `l3`'s flat services on the host (flatnet.l3ns: prefix + short id)."""
        return f"{self.run.prefix}{self.host.name}f{l3['uuid'][:8]}"


@pytest.fixture(scope="module")
def world(run, coordinator, token):
    w = World(run, coordinator, token)

    async def setup():
        async with Client(coordinator.url, token) as api:
            await w.setup(api)
    asyncio.run(setup())
    yield w
    w.host.close()


@pytest.fixture(scope="module")
def image():
    return guest_image.build()


async def until(cond: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await cond()
        if got:
            return got
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


async def guest(api: Client, world: World, image, name: str, l3: dict, **more: Any) -> dict:
    """A tiny guest that holds (keeps running, watches its devices) on `l3`."""
    return await api.post("/v1/vms", {
        "name": name, "host_uuid": world.host.uuid, "l3_network_uuids": [l3["uuid"]],
        "kernel": {"kernel": str(image.kernel), "initrd": str(image.initrd), "cmdline": image.cmdline("hold")},
        **more}, wait="60")


async def test_nic_hot_plug_leases_the_running_guest_and_unplug_releases_everything(api, world, image, store):
    vm = await guest(api, world, image, "nics", world.flat)
    await world.serial_has(vm["uuid"], "HS-HOLD")
    got = world.hs("vm", "attach-nic", "nics", "--l3", "second", "--wait", "120")
    nic = NicSpec.model_validate(next(n for n in got["spec"]["nics"] if n["l3_uuid"] == world.second["uuid"]))
    assert got["pending"] is None and got["leases"][nic.uuid]["state"] == "bound"  # leased by our DHCP
    log = await world.serial_has(vm["uuid"], rf"HS-DHCP-BOUND iface=eth1 ip={re.escape(nic.ip)} ")
    assert f"HS-NIC-HOTPLUG eth1 mac={nic.mac}" in log
    ns = world.flat_ns(world.second)
    assert world.host.ns.sh("ip", "link", "show", nic.tap).returncode == 0
    assert f'"{nic.tap}"' in antispoof(world)  # its own chain: only its MAC and IP pass
    assert f"{nic.ip} dev" in world.host.ns.sh("ip", "-n", ns, "neigh", "show", "nud", "permanent").stdout
    for key in (keys.ipam(nic.l3_uuid, nic.ip), keys.mac(world.second["l2_uuid"], nic.mac),
                keys.observed("lease", nic.uuid)):
        assert await store.get(key) is not None, key

    got = world.hs("vm", "detach-nic", "nics", "second")
    assert [n["l3_uuid"] for n in got["spec"]["nics"]] == [world.flat["uuid"]] and got["spec"]["nics"][0]["default"]
    await world.serial_has(vm["uuid"], "HS-NIC-UNPLUG eth1", 60)

    async def released() -> bool:
        tap = world.host.ns.sh("ip", "link", "show", nic.tap, rcs=(0, 1)).returncode == 1
        neigh = world.host.ns.sh("ip", "-n", ns, "neigh", "show", rcs=(0, 1, 255)).stdout  # or the namespace gone
        return tap and nic.ip not in neigh and nic.tap not in antispoof(world)
    await until(released, 30, "tap or reservation left on the host")
    for key in (keys.ipam(nic.l3_uuid, nic.ip), keys.mac(world.second["l2_uuid"], nic.mac),
                keys.observed("lease", nic.uuid)):
        assert await store.get(key) is None, key
    assert "eth1" not in world.host.libvirt.virsh("domiflist", vm["uuid"])
    await api.delete(f"/v1/vms/{vm['uuid']}", wait="30")


def antispoof(world: World) -> str:
    return world.host.ns.sh("nft", "list", "table", "bridge", "hs_antispoof").stdout


async def test_reboot_boots_the_guest_again_once_across_agent_restarts(api, world, image):
    vm = await guest(api, world, image, "reboot", world.flat)
    await world.serial_has(vm["uuid"], "HS-HOLD")
    booted = world.domain_id(vm["uuid"])
    got = world.hs("vm", "reboot", "reboot", "--wait", "60")
    assert got["pending"] is None and got["observed"]["reboot_seq"] == got["spec"]["reboot_seq"] == 1
    log = await world.serial_has(vm["uuid"], "HS-INIT-START", count=2)
    assert "HS-ACPI-POWERBUTTON" in log  # graceful first
    await world.serial_has(vm["uuid"], "HS-HOLD", count=2)
    rebooted = world.domain_id(vm["uuid"])
    assert rebooted != booted  # the reboot started a fresh qemu (reboot.py)
    assert (await api.get(f"/v1/vms/{vm['uuid']}"))["observed"]["state"] == "Running"

    world.host.kill_agent()  # the request was applied once: a restarted agent does not apply it again
    killed = time.time()
    await asyncio.to_thread(world.host.restart_agent)

    async def reported_again() -> dict | None:
        """The VM's report by the restarted agent: sent once its first pass converged the VM, and for a VM it
        reboots only once the guest runs again (reboot.py), so any reboot of its own came before it."""
        seen = (await api.get(f"/v1/vms/{vm['uuid']}"))["observed"] or {}
        return seen if seen.get("at", 0) > killed else None
    seen = await until(reported_again, 60, "the restarted agent never reported the VM")
    assert seen["state"] == "Running" and seen["reboot_seq"] == 1
    assert world.domain_id(vm["uuid"]) == rebooted  # the same qemu: not started again
    assert len(re.findall("HS-INIT-START", world.serial(vm["uuid"]))) == 2  # the guest's own count of its boots
    await api.delete(f"/v1/vms/{vm['uuid']}", wait="30")


async def test_boot_order_after_an_iso_install_then_set_boot_order_and_reboot(api, world, image):
    vm = await api.post("/v1/vms", {
        "name": "iso", "host_uuid": world.host.uuid, "l3_network_uuids": [world.flat["uuid"]],
        "iso_path": str(image.iso), "root_volume": {"kind": "file", "path": "iso/root.qcow2",
                                                    "backing": str(image.disk), "backing_format": "raw"}}, wait="60")
    path = f"/v1/vms/{vm['uuid']}/boot-order"
    assert (await api.get(path))["desired"] == ["CdRom", "HardDisk"]
    await world.serial_has(vm["uuid"], "HS-INIT-START boot=cdrom action=reboot")
    await world.serial_has(vm["uuid"], "HS-INIT-START boot=disk action=hold")
    hard_first = {"order": ["HardDisk", "CdRom"], "desired": ["HardDisk", "CdRom"]}  # the coordinator knows
    assert await until(lambda: _is(api.get(path), hard_first), 20, "boot order after the install")
    assert world.hs("vm", "get-boot-order", "iso") == hard_first

    await api.put(path, {"order": ["CdRom", "HardDisk"]})
    cd_first = {"order": ["CdRom", "HardDisk"], "desired": ["CdRom", "HardDisk"]}
    await until(lambda: _is(api.get(path), cd_first), 20, "the new boot order never reached the host")
    world.hs("vm", "reboot", "iso", "--wait", "60")
    await world.serial_has(vm["uuid"], "HS-INIT-START boot=cdrom", count=2)  # the new order, after the reboot
    await api.delete(f"/v1/vms/{vm['uuid']}", wait="30")


async def _is(got: Awaitable[Any], want: Any) -> bool:
    return await got == want


async def test_dhcp_attached_to_an_l3_with_a_running_guest_leases_it_on_renew(api, world, image):
    vm = await guest(api, world, image, "late-dhcp", world.bare)
    nic = vm["spec"]["nics"][0]
    await world.serial_has(vm["uuid"], "HS-DHCP-FAIL eth0")
    await world.serial_has(vm["uuid"], "HS-HOLD")
    await api.post(f"/v1/l3-networks/{world.bare['uuid']}/services", {"service": "DHCP"})
    await world.serial_has(vm["uuid"], rf"HS-DHCP-BOUND iface=eth0 ip={re.escape(nic['ip'])} ", 60)
    lease = await until(lambda: _lease(api, vm["uuid"], nic["uuid"]), 15, "the lease never reached the API")
    assert lease["state"] == "bound" and lease["ip"] == nic["ip"]
    await api.delete(f"/v1/vms/{vm['uuid']}", wait="30")
    await api.delete(f"/v1/l3-networks/{world.bare['uuid']}/services/DHCP")


async def _lease(api: Client, vm_uuid: str, nic_uuid: str) -> dict | None:
    return (await api.get(f"/v1/vms/{vm_uuid}"))["leases"].get(nic_uuid)


async def test_global_cache_mode_reaches_the_next_define_and_the_guest_after_a_reboot(api, world, image):
    vm = await guest(api, world, image, "cache", world.flat,
                     data_volumes=[{"kind": "file", "path": "cache/data.qcow2", "size_bytes": 16 << 20}])
    await world.serial_has(vm["uuid"], r"HS-DISK vda serial=\w+ write_cache=write through")  # the seed's default
    try:
        world.hs("config", "set", "kvm", "vm.cacheMode", "writeback")

        async def defined() -> bool:
            xml = world.host.libvirt.virsh("dumpxml", "--inactive", vm["uuid"])
            return "cache='writeback'" in xml or 'cache="writeback"' in xml
        await until(defined, 20, "the global cache mode never reached the domain's definition")
        world.hs("vm", "reboot", "cache", "--wait", "60")
        await world.serial_has(vm["uuid"], r"HS-DISK vda serial=\w+ write_cache=write back")
    finally:
        world.hs("config", "set", "kvm", "vm.cacheMode", "writethrough")
    await api.delete(f"/v1/vms/{vm['uuid']}", wait="30")


async def test_deleting_a_userdata_tag_stops_serving_it(api, world):
    vm = await api.post("/v1/vms", {"name": "ud", "host_uuid": world.host.uuid, "state": "Stopped",
                                    "l3_network_uuids": [world.flat["uuid"]], "system_tags": ["userdata::v1"]})
    nic = NicSpec.model_validate(vm["spec"]["nics"][0])
    ns = VmNs(world.run, world.host, f"hsbr{world.flat['l2_uuid'][:8]}", nic, "ud")
    ns.ns.ip("addr", "add", f"{nic.ip}/24", "dev", ns.ifname)
    ns.ns.ip("route", "add", "169.254.169.254/32", "via", world.flat["dhcp_address"])

    async def user_data() -> tuple[int, str] | None:
        r = await nshttp.request(ns.ns.name, "169.254.169.254", "/latest/user-data", timeout=1)
        return (r.status, r.text) if r is not None else None

    assert await until(lambda: _is(user_data(), (200, "v1")), 15, "user-data never served")
    tag = (await api.get("/v1/system-tags", resourceUuid=vm["uuid"]))["tags"][0]
    await api.delete(f"/v1/system-tags/{tag['uuid']}")
    async def gone() -> bool:
        got = await user_data()
        return got is not None and got[0] == 404
    await until(gone, 10, "user-data still served after its tag was deleted")
    assert (await api.get(f"/v1/vms/{vm['uuid']}"))["spec"]["userdata"] is None
    await api.delete(f"/v1/vms/{vm['uuid']}")


async def test_out_of_band_shutdown_and_start_become_the_vms_state_by_default(api, world, image):
    """The seed's drift policy, the agent's default: what the user does with virsh (or the guest with halt)
    is captured and reflected, not undone."""
    vm = await guest(api, world, image, "oob", world.flat)
    await world.serial_has(vm["uuid"], "HS-HOLD")

    async def desired(state: str) -> bool:
        got = await api.get(f"/v1/vms/{vm['uuid']}")
        return got["spec"]["state"] == state and (got["observed"] or {}).get("state") == state
    world.host.libvirt.virsh("shutdown", vm["uuid"])  # ACPI: the guest powers itself off
    await until(lambda: desired("Stopped"), 60, "an out-of-band shutdown was not adopted")
    await asyncio.sleep(2)
    assert world.host.libvirt.virsh("domstate", vm["uuid"]).strip() == "shut off"  # not started again
    world.host.libvirt.virsh("start", vm["uuid"])
    await until(lambda: desired("Running"), 30, "an out-of-band start was not adopted")
    await api.delete(f"/v1/vms/{vm['uuid']}", wait="30")
