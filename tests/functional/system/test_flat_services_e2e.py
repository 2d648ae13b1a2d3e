"""Flat network services through the whole system: coordinator API → host stream → kvmagent (real
process) → DHCP / metadata / EIP in its namespaces → real guests and VM namespaces.

Two simulated KVM hosts on one switch; an "internet" namespace on the public network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from functools import partial

import pytest

from agentkit.model import NicSpec
from coordinator.client import Client
from testbed import guest_image, nshttp
from testbed.dhcpprobe import DhcpProbe
from testbed.kvmhost import KvmHost
from testbed.switch import Switch
from testbed.vmns import VmNs

pytestmark = pytest.mark.real
PUBLIC = ipaddress.IPv4Network("203.0.113.0/24")


class Cloud:
    """The module's world: hosts, networks and the internet namespace."""

    def __init__(self, run, coordinator, token):
        self.run, self.coordinator, self.token = run, coordinator, token
        self.switch = Switch(run)
        self.public_switch = Switch(run, "swpub")
        self.a = KvmHost(run, self.switch, "hva", self.public_switch)
        self.b = KvmHost(run, self.switch, "hvb", self.public_switch)
        self.internet = run.netns("inet")
        self.public_switch.plug(self.internet, "eth0", address=False)
        self.internet.ip("addr", "add", f"{PUBLIC[250]}/24", "dev", "eth0")
        self.net = run.subnet()

    async def setup(self, api: Client) -> None:
        for h in (self.a, self.b):
            await h.register(api)
            h.start(self.coordinator)
        l2 = await api.post("/v1/l2-networks", {"name": "data", "physical_interface": "eth1"})
        self.l3 = await api.post("/v1/l3-networks", {
            "name": "flat", "l2_uuid": l2["uuid"], "cidr": str(self.net), "gateway": str(self.net[1]),
            "ip_ranges": [{"start": str(self.net[10]), "end": str(self.net[200])}], "domain": "e2e.test",
            "dns_servers": [str(self.net[1])], "services": ["DHCP", "DNS", "Userdata", "EIP"]})
        pub = await api.post("/v1/l2-networks", {"name": "public", "physical_interface": "eth2"})
        self.public = await api.post("/v1/l3-networks", {
            "name": "public", "l2_uuid": pub["uuid"], "cidr": str(PUBLIC), "gateway": str(PUBLIC[1]),
            "ip_ranges": [{"start": str(PUBLIC[10]), "end": str(PUBLIC[100])}], "public": True})

    def vmns(self, host: KvmHost, nic: dict, role: str, tap: str | None = None) -> VmNs:
        """A VM namespace on `host`'s bridge for a NIC the API created (or a probe MAC)."""
        spec = NicSpec.model_validate(nic)
        bridge = f"hsbr{self.l3['l2_uuid'][:8]}"
        if tap:
            spec = spec.model_copy(update={"uuid": tap})
        return VmNs(self.run, host, bridge, spec, role)


@pytest.fixture(scope="module")
def cloud(run, coordinator, token):
    c = Cloud(run, coordinator, token)

    async def setup():
        async with Client(coordinator.url, token) as api:
            await c.setup(api)
    asyncio.run(setup())
    yield c
    for h in (c.a, c.b):
        h.close()


@pytest.fixture(scope="module")
def image():
    return guest_image.build()


async def guest(api, cloud, host, image, name, tags=()):
    return await api.post("/v1/vms", {
        "name": name, "host_uuid": host.uuid, "l3_network_uuids": [cloud.l3["uuid"]], "system_tags": list(tags),
        "kernel": {"kernel": str(image.kernel), "initrd": str(image.initrd), "cmdline": image.cmdline("hold")},
    }, wait="60")


async def serial_has(host: KvmHost, vm_uuid: str, marker: str, timeout: float) -> str:
    path = host.libvirt.dir / "serial" / f"{vm_uuid}.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if marker in text:
            return text
        await asyncio.sleep(0.5)
    raise AssertionError(f"{marker} not in serial log of {vm_uuid}:\n{text}")


async def test_tiny_guests_get_their_address_and_user_data_on_each_host(api, cloud, image):
    vms = [await guest(api, cloud, h, image, f"g-{h.name}", [f"userdata::hello from {h.name}"])
           for h in (cloud.a, cloud.b)]
    for host, vm in zip((cloud.a, cloud.b), vms, strict=True):
        log = await serial_has(host, vm["uuid"], "HS-USERDATA-END", 120)
        assert f"HS-DHCP-BOUND iface=eth0 ip={vm['spec']['nics'][0]['ip']} " in log
        assert f"hello from {host.name}" in log
        assert f"169.254.169.254/32 {cloud.l3['dhcp_address']}" in log
        nic = vm["spec"]["nics"][0]
        lease = await _until(partial(_lease, api, vm["uuid"], nic["uuid"]), 15, "the lease never reached the API")
        assert (lease["state"], lease["ip"], lease["mac"], lease["l3_uuid"]) == ("bound", nic["ip"], nic["mac"],
                                                                                 cloud.l3["uuid"])
        listed = next(v for v in (await api.get("/v1/vms"))["vms"] if v["uuid"] == vm["uuid"])
        assert listed["leases"][nic["uuid"]]["state"] == "bound"


async def _lease(api, vm_uuid: str, nic_uuid: str) -> dict | None:
    """The lease the host's DHCP server reported for a NIC, as `GET /v1/vms/{uuid}` shows it."""
    return (await api.get(f"/v1/vms/{vm_uuid}"))["leases"].get(nic_uuid)


async def test_reservation_added_through_the_api_is_served_promptly(api, cloud):
    mac = "fa:16:3e:50:00:01"
    probe_nic = {"uuid": "probe0001", "l3_uuid": cloud.l3["uuid"], "mac": mac, "ip": str(cloud.net[250])}
    await guest_on_l3(api, cloud, cloud.a, "anchor")          # the L3 is already served on host A
    ns = cloud.vmns(cloud.a, probe_nic, "probe")
    probe = DhcpProbe(ns)
    try:
        assert probe.ask(mac, timeout=0.3) == []               # unknown MAC: no answer
        loop = asyncio.get_running_loop()
        offered = loop.run_in_executor(None, probe.first_offer, mac, 0.002, 10)
        vm = await api.post("/v1/vms", {"name": "late", "host_uuid": cloud.a.uuid, "state": "Stopped",
                                        "l3_network_uuids": [cloud.l3["uuid"]],
                                        "fixed_macs": {cloud.l3["uuid"]: mac}})
        recorded = time.monotonic()
        ns.become(NicSpec.model_validate(vm["spec"]["nics"][0]).tap)  # anti-spoofing passes known NICs only
        answered = await offered
        assert answered is not None, "reservation never served"
        latency_ms = (answered - recorded) * 1000
        print(f"reservation served {latency_ms:.1f} ms after the API answered")
        assert latency_ms < 1000  # the 50 ms target is measured on a quiet machine, not asserted under CI load
        await api.delete(f"/v1/vms/{vm['uuid']}")
        deadline = time.monotonic() + 10
        while probe.ask(mac, timeout=0.3) != []:               # removed: no longer served
            assert time.monotonic() < deadline, "reservation still served 10 s after the VM's delete"
    finally:
        probe.close()


async def guest_on_l3(api, cloud, host, name):
    return await api.post("/v1/vms", {"name": name, "host_uuid": host.uuid, "state": "Stopped",
                                      "l3_network_uuids": [cloud.l3["uuid"]]}, wait="0")


async def _until(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        got = await cond()
        if got:
            return got
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.005)


async def test_userdata_update_is_served_promptly(api, cloud):
    vm = await api.post("/v1/vms", {"name": "meta", "host_uuid": cloud.a.uuid, "state": "Stopped",
                                    "l3_network_uuids": [cloud.l3["uuid"]], "system_tags": ["userdata::v1"]})
    nic = vm["spec"]["nics"][0]
    ns = cloud.vmns(cloud.a, nic, "meta")
    ns.ns.ip("addr", "add", f"{nic['ip']}/24", "dev", ns.ifname)
    ns.ns.ip("route", "add", "169.254.169.254/32", "via", cloud.l3["dhcp_address"])

    async def user_data(expected):
        r = await nshttp.request(ns.ns.name, "169.254.169.254", "/latest/user-data", timeout=1)
        return r is not None and r.status == 200 and r.text == expected

    await _until(lambda: user_data("v1"), 10, "first user-data never served")
    tag = (await api.get("/v1/system-tags", resourceUuid=vm["uuid"]))["tags"][0]
    await api.put(f"/v1/system-tags/{tag['uuid']}", {"tag": "userdata::v2"})
    t0 = time.monotonic()
    await _until(lambda: user_data("v2"), 5, "updated user-data never served")
    ms = (time.monotonic() - t0) * 1000
    print(f"user-data update served {ms:.1f} ms after the API answered")
    assert ms < 1000  # the 100 ms target is measured on a quiet machine, not asserted under CI load


async def test_eip_through_the_api(api, cloud, image):
    """Attach through the API: the tiny guest answers ping on its VIP; for a VM namespace inbound TCP
    reaches it, outbound leaves from the VIP, metadata reports it, and detach silences it."""
    g = await guest(api, cloud, cloud.a, image, "eip-guest")
    await serial_has(cloud.a, g["uuid"], "HS-DHCP-BOUND", 120)
    eip = await api.post("/v1/eips", {"name": "e1", "public_l3_uuid": cloud.public["uuid"]})
    await api.post(f"/v1/eips/{eip['uuid']}/attach", {"vm_uuid": g["uuid"]})

    async def pingable():
        return cloud.internet.sh("ping", "-c1", "-W1", eip["vip"], rcs=(0, 1)).returncode == 0
    await _until(pingable, 30, "VIP of the tiny guest never answered")
    vm = await api.post("/v1/vms", {"name": "eip-ns", "host_uuid": cloud.a.uuid, "state": "Stopped",
                                    "l3_network_uuids": [cloud.l3["uuid"]]})
    nic = vm["spec"]["nics"][0]
    ns = cloud.vmns(cloud.a, nic, "eipns")
    ns.ns.ip("addr", "add", f"{nic['ip']}/24", "dev", ns.ifname)
    ns.ns.ip("route", "add", "default", "via", str(cloud.net[1]))
    ns.ns.ip("route", "add", "169.254.169.254/32", "via", cloud.l3["dhcp_address"])
    eip2 = await api.post("/v1/eips", {"name": "e2", "public_l3_uuid": cloud.public["uuid"]})
    await api.post(f"/v1/eips/{eip2['uuid']}/attach", {"vm_uuid": vm["uuid"]})

    async def public_ipv4():
        r = await nshttp.request(ns.ns.name, "169.254.169.254", "/latest/meta-data/public-ipv4", timeout=1)
        return r is not None and r.status == 200 and r.text == eip2["vip"]
    await _until(public_ipv4, 10, "metadata public-ipv4 is not the VIP")

    server = cloud.run.popen(ns.ns.argv(["python3", "-m", "http.server", "8080", "--bind", nic["ip"]]))
    try:
        async def tcp_in():
            out = cloud.internet.sh("curl", "-s", "-m", "1", "-o", "/dev/null", "-w", "%{http_code}",
                                    f"http://{eip2['vip']}:8080/", rcs=(0, 7, 28))
            return out.stdout == "200"
        await _until(tcp_in, 20, "TCP to the VIP never reached the VM")
        listener = cloud.run.popen(cloud.internet.argv(["python3", "-c", (
            "import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
            f"s.bind(('{PUBLIC[250]}', 9090)); s.listen(); c, a = s.accept(); print(a[0], flush=True)")]),
            log_name="inet-listener")
        await asyncio.sleep(0.3)
        ns.ns.sh("python3", "-c", f"import socket; socket.create_connection(('{PUBLIC[250]}', 9090), 3).close()")
        listener.wait(5)
        seen = cloud.run.path("inet-listener.log").read_text().strip()
        assert seen == eip2["vip"], f"outbound connection came from {seen}, not the VIP"
    finally:
        cloud.run.stop(server)
    await api.post(f"/v1/eips/{eip2['uuid']}/detach")

    async def silent():
        return cloud.internet.sh("ping", "-c1", "-W1", eip2["vip"], rcs=(0, 1)).returncode == 1
    await _until(silent, 10, "VIP still answers after detach")
