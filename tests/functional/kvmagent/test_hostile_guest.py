"""Issue 13's acceptance: one guest runs every attack at once against its host; its neighbour keeps working.

The real stack: etcd, a coordinator, the kvmagent process (with 1,024 descriptors, as its unit used to
leave it) and its libvirtd, two qemu VMs on one L3 with DHCP, DNS and metadata. Each VM boots with
`hsnet=raw` and its NIC is driven from a namespace (`testbed.guesttap`: a tap bridged to the VM's NIC
through qemu's own network backend), so ordinary programs speak as the guest, on its libvirt-made tap.

The attacker, all at once: 20 connections pipelining user-data requests they never read, slow readers up
to the descriptor limit (2,000 connections), 50,000 DHCP RELEASE/DECLINE frames (half with the victim's
MAC as chaddr), DNS over UDP as fast as it can and 500 TCP connections, all asking names the upstream
never answers in time; and, while it is being deleted, SYNs as the victim (its MAC and address) every
millisecond, finishing every handshake that gets an answer with a GET of user-data. Meanwhile the victim
renews its lease, asks DNS (local and forwarded, UDP and TCP) and reads its instance-id and user-data:
all of it must succeed; the host must stay Connected, the agent grow by less than 50 MiB, etcd's database
by less than 1 MiB, and no frame toward the attacker may carry a byte of the victim's user-data.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentkit.addr import METADATA_ADDRESS
from agentkit.model import NicSpec
from coordinator.client import Client
from flatnet.dhcp import codec as c
from flatnet.l3ns import INNER_DEV_PREFIX, short_id
from testbed import attacks, guest_image, nshttp
from testbed.dhcpprobe import DhcpProbe
from testbed.guestnic import GuestNic, SynSpray
from testbed.guesttap import GuestTap
from testbed.kvmhost import KvmHost
from testbed.netns import Netns
from testbed.switch import Switch
from testbed.vmns import VmNs

pytestmark = pytest.mark.real
SECRET = "victims-secret-5d1e"
USERDATA = f"#cloud-config\n# {SECRET}\n" + "#" * 16000 + "\n"
ATTACK_SECONDS = 45.0


@dataclass
class Guest:
    vm: dict
    nic: NicSpec
    ns: VmNs
    tap: GuestTap


@dataclass
class Cloud:
    host: KvmHost
    l3: dict
    victim: Guest
    attacker: Guest
    etcd_url: str
    taps: list[GuestTap] = field(default_factory=list)

    def serial(self, vm: dict) -> str:
        path = self.host.libvirt.dir / "serial" / f"{vm['uuid']}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def flat(self) -> Netns:
        """The L3's flat namespace on the host (where DHCP, DNS and metadata answer from)."""
        return Netns(self.host.run, f"{self.host.run.prefix}{self.host.name}f{short_id(self.l3['uuid'])}")

    def namespace_mac(self) -> str:
        """The flat namespace's MAC, asked of the kernel (the attacker's ARP would be over its packet rate)."""
        dev = INNER_DEV_PREFIX + short_id(self.l3["uuid"])
        return self.flat().sh("cat", f"/sys/class/net/{dev}/address").stdout.strip()

    def udp_queue_overflows(self) -> int:
        """Datagrams the flat namespace's kernel dropped because a socket's queue was full."""
        lines = [x.split() for x in self.flat().sh("cat", "/proc/net/snmp").stdout.splitlines() if x.startswith("Udp:")]
        return int(lines[1][lines[0].index("RcvbufErrors")])

    def agent_rss(self) -> int:
        """KiB."""
        assert self.host.agent is not None
        status = Path(f"/proc/{self.host.agent.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]

    def etcd_db_size(self) -> int:
        with urllib.request.urlopen(f"{self.etcd_url}/metrics", timeout=5) as r:  # noqa: S310
            text = r.read().decode()
        return int(float(re.search(r"^etcd_mvcc_db_total_size_in_bytes (\S+)$", text, re.M).group(1)))  # type: ignore[union-attr]


async def until(cond: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


async def boot(api: Client, cloud_host: KvmHost, l3: dict, image: guest_image.GuestImage, name: str,
               tags: list[str], watch: bytes = b"") -> Guest:
    vm = await api.post("/v1/vms", {
        "name": name, "host_uuid": cloud_host.uuid, "l3_network_uuids": [l3["uuid"]], "system_tags": tags,
        "kernel": {"kernel": str(image.kernel), "initrd": str(image.initrd),
                   "cmdline": image.cmdline("hold", "hsnet=raw")}}, wait="60")
    assert vm["observed"]["state"] == "Running"
    serial = cloud_host.libvirt.dir / "serial" / f"{vm['uuid']}.log"
    await until(lambda: serial.exists() and "HS-READY" in serial.read_text(errors="replace"), 180,
                f"{name} never booted")
    nic = NicSpec.model_validate(vm["spec"]["nics"][0])
    ns = VmNs(cloud_host.run, None, "", nic, f"hg{name}")
    tap = GuestTap(ns, GuestNic(cloud_host.libvirt, vm["uuid"]), watch)
    prefix = l3["cidr"].split("/")[1]
    ns.ns.ip("addr", "add", f"{nic.ip}/{prefix}", "dev", ns.ifname)
    ns.ns.ip("route", "add", f"{METADATA_ADDRESS}/32", "via", l3["dhcp_address"])
    ns.ns.ip("route", "add", "default", "via", l3["gateway"])
    return Guest(vm, nic, ns, tap)


@pytest.fixture(scope="module")
def image():
    return guest_image.build()


@pytest.fixture(scope="module")
def cloud(run, etcd, coordinator, token, image):
    switch = Switch(run)
    host = KvmHost(run, switch, "hostile")
    upstream = run.netns("hgdns")
    address = switch.plug(upstream, "eth0")
    upstream.popen([sys.executable, "-m", "testbed.dnsupstream"], log_name="hostile-dns-upstream")

    async def setup() -> Cloud:
        async with Client(coordinator.url, token) as api:
            await host.register(api)
            host.start(coordinator, nofile=1024)
            net = run.subnet()
            l2 = await api.post("/v1/l2-networks", {"name": "hostile", "physical_interface": "eth1"})
            l3 = await api.post("/v1/l3-networks", {
                "name": "hostile", "l2_uuid": l2["uuid"], "cidr": str(net), "gateway": str(net[1]),
                "ip_ranges": [{"start": str(net[10]), "end": str(net[50])}], "dns_servers": [str(address.ip)],
                "domain": "hostile.test", "services": ["DHCP", "DNS", "Userdata"]})
            victim = await boot(api, host, l3, image, "victim", [f"userdata::{USERDATA}"])
            attacker = await boot(api, host, l3, image, "attacker", [], watch=SECRET.encode())
            return Cloud(host, l3, victim, attacker, f"http://{etcd.endpoint}")

    cloud = asyncio.run(setup())
    try:
        yield cloud
    finally:
        for guest in (cloud.victim, cloud.attacker):
            guest.tap.close()
        host.close()


@dataclass
class VictimLog:
    """What the victim tried while attacked, and what failed."""

    tries: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def note(self, what: str, ok: bool, detail: object = "") -> None:
        self.tries[what] = self.tries.get(what, 0) + 1
        if not ok:
            self.failures.append(f"{what}: {detail}")


def renew(victim: Guest, server: str) -> list[int]:
    """A RENEWING request (ciaddr set, unicast to the server): the message types answered."""
    probe = DhcpProbe(victim.ns)
    try:
        pkt = dataclasses.replace(probe.request(victim.nic.mac, c.REQUEST, broadcast=False),
                                  ciaddr=socket.inet_aton(victim.nic.ip))
        probe.sock.sendto(c.build(pkt), (server, 67))
        return [p.message_type for p in probe.replies(pkt.xid, 3.0)]
    finally:
        probe.close()


async def keep_working(cloud: Cloud, api: Client, seconds: float, log: VictimLog) -> None:
    """The victim's own business, over and over, for `seconds`; and the host's state, every round."""
    victim, l3 = cloud.victim, cloud.l3
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + seconds
    round_ = 0
    while time.monotonic() < deadline:
        for path, want in (("/latest/meta-data/instance-id", victim.vm["uuid"]), ("/latest/user-data", USERDATA)):
            reply = await nshttp.request(victim.ns.ns.name, METADATA_ADDRESS, path, timeout=3)
            log.note(path, reply is not None and (reply.status, reply.text) == (200, want),
                     reply.status if reply else "no answer")
        for name, want, tcp in (("www.example.net", "203.0.113.7", False), ("www.example.net", "203.0.113.7", True),
                                ("victim.hostile.test", victim.nic.ip, False)):
            try:
                got = [str(r.rdata) for r in (await loop.run_in_executor(
                    None, victim.ns.dns, l3["dhcp_address"], name, "A", tcp)).rr]
            except OSError as e:
                got = [repr(e)]
            log.note(f"dns {name} {'tcp' if tcp else 'udp'}", got == [want], got)
        if round_ % 3 == 0:
            got = await loop.run_in_executor(None, renew, victim, l3["dhcp_address"])
            log.note("dhcp renew", got == [c.ACK], got)
        state = (await api.get(f"/v1/hosts/{cloud.host.uuid}"))["state"]
        log.note("host connected", state == "Connected", state)
        round_ += 1
        await asyncio.sleep(0.5)


async def spray_during_deletion(cloud: Cloud, api: Client, after: float) -> SynSpray:
    """SYNs as the victim from the attacker's NIC, from before its deletion until its qemu is gone."""
    await asyncio.sleep(after)
    a, v = cloud.attacker, cloud.victim
    nic = GuestNic(cloud.host.libvirt, a.vm["uuid"])
    spray = SynSpray(nic, v.nic.mac, v.nic.ip, cloud.namespace_mac(), METADATA_ADDRESS).start()
    await asyncio.sleep(0.5)
    await api.delete(f"/v1/vms/{a.vm['uuid']}")
    await until(lambda: not nic.alive, 60, "the attacker's qemu never exited")
    await asyncio.sleep(2)
    spray.stop()
    return spray


async def test_one_guest_attacking_everything_at_once_changes_nothing_for_its_neighbour(cloud, api):
    a, l3 = cloud.attacker, cloud.l3
    rss, db = cloud.agent_rss(), cloud.etcd_db_size()
    warmup = VictimLog()
    await keep_working(cloud, api, 1, warmup)
    assert warmup.failures == [], "the victim does not work even before the attack"
    lease = await asyncio.get_running_loop().run_in_executor(None, cloud.victim.ns.udhcpc)
    assert lease is not None and lease.ip == cloud.victim.nic.ip
    attack = [attacks.argv("metadata-pipeline", conns=20, seconds=ATTACK_SECONDS),
              attacks.argv("metadata-hold", conns=2000, seconds=ATTACK_SECONDS),
              attacks.argv("dhcp", count=50_000, seconds=ATTACK_SECONDS, ifname=a.ns.ifname, mac=a.nic.mac,
                           ip=a.nic.ip, forge=cloud.victim.nic.mac),
              attacks.argv("dns-udp", host=l3["dhcp_address"], seconds=ATTACK_SECONDS),
              attacks.argv("dns-tcp", host=l3["dhcp_address"], conns=500, seconds=ATTACK_SECONDS)]
    procs = [a.ns.ns.popen(argv, log_name=f"hostile-{argv[3]}") for argv in attack]
    log = VictimLog()
    try:
        await asyncio.sleep(3)
        spray, _ = await asyncio.gather(spray_during_deletion(cloud, api, 15), keep_working(cloud, api, 30, log))
    finally:
        for proc in procs:
            cloud.host.run.stop(proc)
    grown, db_grown = cloud.agent_rss() - rss, cloud.etcd_db_size() - db
    text = (cloud.host.agent_api("/metrics") or {}).get("text", "")
    counters = {m.group(1): float(m.group(2)) for m in re.finditer(r'^hoststack_flatnet_(\S+) (\S+)$', text, re.M)}
    print(f"\nvictim: {log.tries}, failures {log.failures}; agent RSS +{grown} KiB, etcd db +{db_grown} B; "
          f"attacker's tap: {a.tap.frames} frames toward it; spray: {len(spray.sent)} SYNs, "
          f"{len(spray.answers())} answered; UDP queue overflows {cloud.udp_queue_overflows()}\n"
          + "\n".join(f"{k} {v:g}" for k, v in counters.items()))
    assert log.failures == []
    assert all(log.tries.get(k, 0) >= 5 for k in ("/latest/user-data", "dns www.example.net tcp", "dhcp renew"))
    assert grown < 50 * 1024 and db_grown < 1 << 20
    assert a.tap.seen == 0 and SECRET.encode() not in spray.payload() and spray.answers() == []
    # the attack was real: heard and answered in part, and every service had to hold it back
    assert a.tap.frames > 1000 and len(spray.sent) > 50 and counters["guest_pps_dropped_total"] > 0
    for service, event in (("dhcp", "rate_limited"), ("dns", "forward_limited"), ("dns", "tcp_evicted"),
                           ("metadata", "evicted")):
        assert any(k.endswith(f'service="{service}",event="{event}"}}') and v > 0 for k, v in counters.items())
