"""Hostile guests against the real agent: anti-spoofing fails closed (issue 13, finding 3).

One simulated KVM host runs the real agent with its flat services (DHCP, metadata); VM B holds a secret
in its user data. Attackers speak through the NIC of a real qemu VM on its libvirt-made tap
(`testbed.guestnic`: frames injected into, and read from, qemu's own network backend), or through a
leftover veth: SYNs as (B's MAC, B's IP) every millisecond to the metadata service, DHCP with B's MAC as
`chaddr`. Nothing of B's may ever come back: not while A is deleted, not while libvirtd is down during the
delete, not from a tap the agent does not know.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from agentkit.addr import METADATA_ADDRESS
from agentkit.netns import netns_socket
from coordinator.client import Client
from flatnet.l3ns import INNER_DEV_PREFIX, short_id
from testbed import guest_image
from testbed.guestnic import GuestNic, SynSpray
from testbed.kvmhost import KvmHost
from testbed.netns import Netns
from testbed.switch import Switch

pytestmark = pytest.mark.real
SECRET = "secret-of-b-7f3a"


@dataclass
class Cloud:
    host: KvmHost
    l2: dict
    l3: dict
    b: dict

    def nic(self, vm: dict) -> tuple[str, str, str]:
        nic = vm["spec"]["nics"][0]
        return nic["mac"], nic["ip"], f"hst{nic['uuid'][:8]}"

    def serial(self, name: str) -> str:
        path = self.host.libvirt.dir / "serial" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def ruleset(self) -> str:
        return self.host.ns.sh("nft", "list", "table", "bridge", "hs_antispoof").stdout

    def namespace_mac(self) -> str:
        """The MAC of the L3's service namespace (where DHCP and metadata answer from)."""
        sid = short_id(self.l3["uuid"])
        netns = Netns(self.host.run, f"{self.host.run.prefix}{self.host.name}f{sid}")
        return str(netns.sh("cat", f"/sys/class/net/{INNER_DEV_PREFIX}{sid}/address").stdout.strip())


async def until(cond: Callable[[], object] | Callable[[], Awaitable[object]], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def image():
    return guest_image.build()


@pytest.fixture(scope="module")
def cloud(run, coordinator, token, image):
    host = KvmHost(run, Switch(run), "guard")

    async def setup() -> Cloud:
        async with Client(coordinator.url, token) as api:
            await host.register(api)
            host.start(coordinator)
            net = run.subnet()
            l2 = await api.post("/v1/l2-networks", {"name": "guard", "physical_interface": "eth1"})
            l3 = await api.post("/v1/l3-networks", {
                "name": "guard", "l2_uuid": l2["uuid"], "cidr": str(net), "gateway": str(net[1]),
                "ip_ranges": [{"start": str(net[10]), "end": str(net[50])}], "services": ["DHCP", "Userdata"]})
            b = await guest(api, host, l3, image, "victim", [f"userdata::{SECRET}"])
            cloud = Cloud(host, l2, l3, b)
            await until(lambda: "HS-USERDATA-END" in cloud.serial(b["uuid"]), 180, "B never booted")
            assert SECRET in cloud.serial(b["uuid"])
            await until(lambda: _lease(api, b), 15, "B's lease never reached the API")
            return cloud
    try:
        yield asyncio.run(setup())
    finally:
        host.close()


async def guest(api: Client, host: KvmHost, l3: dict, image, name: str, tags=()) -> dict:
    return await api.post("/v1/vms", {
        "name": name, "host_uuid": host.uuid, "l3_network_uuids": [l3["uuid"]], "system_tags": list(tags),
        "kernel": {"kernel": str(image.kernel), "initrd": str(image.initrd), "cmdline": image.cmdline("hold")},
    }, wait="60")


async def _lease(api: Client, vm: dict) -> dict | None:
    return (await api.get(f"/v1/vms/{vm['uuid']}"))["leases"].get(vm["spec"]["nics"][0]["uuid"])


async def attacker(api: Client, cloud: Cloud, image, name: str) -> tuple[dict, GuestNic]:
    """VM A, booted (its virtio driver up), with its NIC in the test's hands."""
    a = await guest(api, cloud.host, cloud.l3, image, name)
    assert a["observed"]["state"] == "Running"
    await until(lambda: "HS-NIC" in cloud.serial(a["uuid"]), 120, "A's NIC never came up")
    return a, GuestNic(cloud.host.libvirt, a["uuid"])


async def test_a_vm_being_deleted_never_speaks_as_another(api, cloud, image):
    """A sends SYNs as B every millisecond while it is deleted: no answer, before, during or after. The
    delete follows another VM's creation, so the VMs component is busy when anti-spoofing learns of it."""
    a, nic = await attacker(api, cloud, image, "departing")
    mac_a, ip_a, _ = cloud.nic(a)
    mac_b, ip_b, _ = cloud.nic(cloud.b)
    try:
        svc = await asyncio.to_thread(nic.resolve, mac_a, ip_a, cloud.l3["dhcp_address"])
        own = SynSpray(nic, mac_a, ip_a, svc, METADATA_ADDRESS, interval=0.02).start()
        await until(own.answers, 10, "A as itself is never answered: the harness is blind")
        own.stop()
        spray = SynSpray(nic, mac_b, ip_b, svc, METADATA_ADDRESS).start()
        await asyncio.sleep(0.3)
        other = await api.post("/v1/vms", {"name": "newcomer", "host_uuid": cloud.host.uuid,
                                           "l3_network_uuids": [cloud.l3["uuid"]]}, wait="0")
        deleted = time.monotonic()
        await api.delete(f"/v1/vms/{a['uuid']}")
        await until(lambda: not nic.alive, 60, "A's qemu never exited")
        spray.stop()
        await api.delete(f"/v1/vms/{other['uuid']}")
        assert len([t for t in spray.sent if t > deleted]) > 20, "the delete window was not sprayed"
        assert spray.answers() == [], f"{len(spray.answers())} SYNs as B answered"
        assert SECRET.encode() not in spray.payload()
    finally:
        nic.close()


async def test_a_vm_deleted_while_libvirtd_is_down_stays_cut_off_until_destroyed(api, cloud, image):
    """libvirt cannot destroy A: its tap is cut off (as itself and as B) until the destroy succeeds."""
    a, nic = await attacker(api, cloud, image, "stuck")
    mac_a, ip_a, tap_a = cloud.nic(a)
    mac_b, ip_b, _ = cloud.nic(cloud.b)
    try:
        svc = await asyncio.to_thread(nic.resolve, mac_a, ip_a, cloud.l3["dhcp_address"])
        cloud.host.libvirt.stop_libvirtd()
        try:
            await api.delete(f"/v1/vms/{a['uuid']}")
            await until(lambda: f"jump tap_{tap_a}" not in cloud.ruleset(), 20, "the agent never applied the delete")
            sprays = [SynSpray(nic, mac_b, ip_b, svc, METADATA_ADDRESS).start(),
                      SynSpray(nic, mac_a, ip_a, svc, METADATA_ADDRESS, interval=0.01).start()]
            await asyncio.sleep(2)
            for spray in sprays:
                spray.stop()
            assert nic.alive and all(len(s.sent) > 50 for s in sprays)
            assert [s.answers() for s in sprays] == [[], []]
            assert SECRET.encode() not in sprays[0].payload()
        finally:
            cloud.host.libvirt.start()
        await until(lambda: not nic.alive, 60, "A was not destroyed once libvirtd was back")
    finally:
        nic.close()


async def test_unknown_ports_on_the_agents_bridge_pass_nothing(cloud, image):
    """A hand-defined domain (libvirt names its tap) and a leftover `hst…` veth on the agent's bridge: 750
    SYNs as B, DHCP and ARP as themselves; nothing of the agent's or B's reaches them."""
    mac_b, ip_b, _ = cloud.nic(cloud.b)
    svc, bridge = cloud.namespace_mac(), f"hsbr{cloud.l2['uuid'][:8]}"
    lv, run = cloud.host.libvirt, cloud.host.run
    hand_mac, hand_ip = "52:54:00:99:00:01", cloud.l3["gateway"]
    xml = run.path("handmade.xml")
    xml.write_text(f"""<domain type='qemu'><name>handmade</name><memory unit='MiB'>192</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><kernel>{image.kernel}</kernel><initrd>{image.initrd}</initrd>
<cmdline>{image.cmdline('hold')}</cmdline></os><devices>
<interface type='bridge'><mac address='{hand_mac}'/><source bridge='{bridge}'/><model type='virtio'/></interface>
<serial type='file'><source path='{lv.dir / "serial" / "handmade.log"}'/><target port='0'/></serial>
<memballoon model='none'/></devices></domain>""")
    lv.virsh("define", str(xml))
    lv.virsh("start", "handmade")
    leftover = run.netns("leftover")
    run.veth(cloud.host.ns, "hstleft0ver", leftover, "eth0")
    cloud.host.ns.ip("link", "set", "hstleft0ver", "master", bridge)
    try:
        await until(lambda: "HS-NIC" in cloud.serial("handmade"), 120, "the hand-made guest never came up")
        nic = GuestNic(lv, "handmade")
        try:
            sprays = [SynSpray(nic, mac_b, ip_b, svc, METADATA_ADDRESS).start(),
                      SynSpray(nic, hand_mac, hand_ip, svc, METADATA_ADDRESS, interval=0.01).start()]
            veth = await asyncio.to_thread(_veth_attack, leftover.name, mac_b, ip_b, svc, cloud.l3["dhcp_address"])
            nic.send(bytes(_discover(hand_mac)))
            nic.send(bytes(Ether(src=hand_mac, dst="ff:ff:ff:ff:ff:ff")
                           / ARP(op=1, hwsrc=hand_mac, psrc=hand_ip, pdst=cloud.l3["dhcp_address"])))
            await until(lambda: len(sprays[0].sent) >= 750, 30, "750 SYNs not sent")
            for spray in sprays:
                spray.stop()
            ours = {svc, mac_b}
            reached = [raw for _, raw in nic.received if Ether(raw).src in ours]
            assert reached == [] and [s.answers() for s in sprays] == [[], []]
            assert veth == []
        finally:
            nic.close()
    finally:
        with contextlib.suppress(Exception):
            lv.virsh("destroy", "handmade")
            lv.virsh("undefine", "handmade")


def _veth_attack(netns: str, mac_b: str, ip_b: str, svc: str, dhcp_address: str) -> list[bytes]:
    """From the leftover veth: SYNs as B, DHCP and ARP; every frame from the service namespace or B that came back."""
    sock = netns_socket(netns, socket.AF_PACKET, socket.SOCK_RAW, lambda s: s.bind(("eth0", 0x0003)))
    back: list[bytes] = []
    with sock:
        sock.settimeout(0.001)
        for sport in range(40000, 40750):
            sock.send(bytes(Ether(src=mac_b, dst=svc) / IP(src=ip_b, dst=METADATA_ADDRESS)
                            / TCP(sport=sport, dport=80, flags="S")))
            if sport % 100 == 0:
                sock.send(bytes(_discover(mac_b)))
                sock.send(bytes(Ether(src=mac_b, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac_b, psrc=ip_b,
                                                                                 pdst=dhcp_address)))
            with contextlib.suppress(TimeoutError):
                frame, (_, _, kind, *_) = sock.recvfrom(65536)
                if kind != socket.PACKET_OUTGOING and Ether(frame).src in (svc, mac_b):
                    back.append(frame)
    return back


def _discover(mac: str, chaddr: str | None = None, kind: str = "discover", src: str = "0.0.0.0",
              dst: str = "255.255.255.255", requested: str | None = None, **bootp: object) -> Ether:
    """A DHCP client message from `mac` naming `chaddr` (default: `mac`), asking for broadcast replies."""
    hw = bytes.fromhex((chaddr or mac).replace(":", "")) + bytes(10)
    options: list[object] = [("message-type", kind)]
    if requested:
        options.append(("requested_addr", requested))
    return (Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src=src, dst=dst) / UDP(sport=68, dport=67)
            / BOOTP(op=1, chaddr=hw, flags=0x8000, xid=0x1301, **bootp) / DHCP(options=[*options, "end"]))


def _dhcp_replies(nic: GuestNic, chaddr: str) -> list[Ether]:
    hw = bytes.fromhex(chaddr.replace(":", ""))
    frames = [Ether(raw) for _, raw in list(nic.received)]
    return [f for f in frames if BOOTP in f and f[BOOTP].op == 2 and bytes(f[BOOTP].chaddr)[:6] == hw]


async def test_dhcp_as_another_nic_gets_no_offer_and_reports_no_lease(api, cloud, image):
    """A sends DISCOVER, REQUEST, DECLINE and RELEASE with B's MAC as chaddr: no OFFER or ACK naming B
    reaches A, and the host reports nothing about B's lease."""
    a, nic = await attacker(api, cloud, image, "forger")
    mac_a, ip_a, _ = cloud.nic(a)
    mac_b, ip_b, _ = cloud.nic(cloud.b)
    server = cloud.l3["dhcp_address"]
    try:
        before = await _lease(api, cloud.b)
        assert before is not None and before["state"] == "bound"
        nic.send(bytes(_discover(mac_a)))
        await until(lambda: _dhcp_replies(nic, mac_a), 10, "A's own DISCOVER is never answered: the harness is blind")
        for _ in range(3):
            for frame in (_discover(mac_a, mac_b),
                          _discover(mac_a, mac_b, "request", requested=ip_b),
                          _discover(mac_a, mac_b, "decline"),
                          _discover(mac_a, mac_b, "release", src=ip_a, dst=server, ciaddr=ip_b)):
                nic.send(bytes(frame))
            await asyncio.sleep(0.3)
        assert _dhcp_replies(nic, mac_b) == []
        for _ in range(10):  # for 5 s: well past a lease report's debounce (1 s) and its way to the coordinator
            assert await _lease(api, cloud.b) == before
            await asyncio.sleep(0.5)
        assert _dhcp_replies(nic, mac_b) == []
    finally:
        nic.close()
        await api.delete(f"/v1/vms/{a['uuid']}")
