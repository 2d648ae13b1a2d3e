"""eip: seconds to apply 1,000 EIPs on one host (ours) against the ZStack 1.2 way (peer).

Ours: one `EipDataplane.apply` (one namespace for the (public, private) L3 pair, netlink, one
`nft -f` per table). Peer: what ZStack 1.2's deip.py does per EIP, as commands: a namespace, two veth
pairs, addresses, a default route, an ebtables `arpreply` chain on the host and ten iptables
DNAT/SNAT/FORWARD rules (its `grep` idempotency checks left out, which favours the peer). The peer is
measured on 100 EIPs and scaled x10. Before the last line: the same for removal, and iperf3 TCP
throughput through an EIP (internet -> VIP -> VM) against a plain routed veth pair (client -> router
namespace -> server). Everything runs in namespaces tagged by the run and is removed after.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
import time

from agentkit.model import EipBinding, L2Spec, L3Spec, NicSpec, Service, VmSpec
from agentkit.proc import run
from flatnet.eip import EipDataplane, EipSettings
from testbed.netns import Netns, Run

# 1,000 VIPs do not fit 203.0.113.0/24: the bench's "public" L3 is a /22 of 198.18.0.0/15.
PUBLIC, PRIVATE = ipaddress.IPv4Network("198.19.0.0/22"), ipaddress.IPv4Network("198.18.0.0/22")
OURS, PEER, SCALE = 1000, 100, 10
IPERF_SECONDS = 3


class Bed:
    """A host namespace with a public and a private bridge, an internet namespace, one real VM."""

    def __init__(self, run_: Run):
        self.run = run_
        self.private_l2 = L2Spec(uuid="b0000000-priv", name="priv", physical_interface="none0")
        self.public_l2 = L2Spec(uuid="b1111111-pub", name="pub", physical_interface="none1")
        self.private_l3 = L3Spec(uuid="l3-priv", name="priv", l2_uuid=self.private_l2.uuid, cidr=str(PRIVATE),
                                 gateway=str(PRIVATE[1]), services=[Service.EIP])
        self.public_l3 = L3Spec(uuid="l3-pub", name="pub", l2_uuid=self.public_l2.uuid, cidr=str(PUBLIC),
                                gateway=str(PUBLIC[1]), public=True)
        self.host = run_.netns("host")
        for l2 in (self.private_l2, self.public_l2):
            self.host.ip("link", "add", l2.bridge, "type", "bridge")
            self.host.ip("link", "set", l2.bridge, "up")
        self.internet = run_.netns("inet")
        run_.veth(self.internet, "eth0", self.host, "inet")
        self.host.ip("link", "set", "inet", "master", self.public_l2.bridge)
        self.internet.ip("addr", "add", f"{PUBLIC[1]}/{PUBLIC.prefixlen}", "dev", "eth0")
        self.vms = {v.uuid: v for v in (self._vm(i) for i in range(OURS))}
        first = next(iter(self.vms.values())).nics[0]
        self.vm = run_.netns("vm")
        run_.veth(self.vm, "eth0", self.host, first.tap)
        self.host.ip("link", "set", first.tap, "master", self.private_l2.bridge)
        self.vm.ip("link", "set", "eth0", "address", first.mac)
        self.vm.ip("addr", "add", f"{first.ip}/{PRIVATE.prefixlen}", "dev", "eth0")
        self.vm.ip("route", "add", "default", "via", str(PRIVATE[1]))

    def _vm(self, i: int) -> VmSpec:
        eip = EipBinding(uuid=f"eip-{i:04d}", vip=str(PUBLIC[10 + i]), public_l3_uuid=self.public_l3.uuid)
        nic = NicSpec(uuid=f"{i:08d}-nic", l3_uuid=self.private_l3.uuid, mac=f"52:54:00:00:{i >> 8:02x}:{i & 255:02x}",
                      ip=str(PRIVATE[10 + i]), default=True, eip=eip)
        return VmSpec(uuid=f"vm-{i:04d}", name=f"vm{i}", nics=[nic])

    @property
    def l2s(self) -> dict[str, L2Spec]:
        return {x.uuid: x for x in (self.private_l2, self.public_l2)}

    @property
    def l3s(self) -> dict[str, L3Spec]:
        return {x.uuid: x for x in (self.private_l3, self.public_l3)}


def iperf(server: Netns, client: Netns, address: str) -> float:
    """Gbit/s received by an iperf3 server in `server` from a client in `client` (retried until it listens)."""
    proc = server.popen(["iperf3", "-s", "-p", "5201"], log_name=f"iperf-{server.name}")
    try:
        for _ in range(30):
            out = client.sh("iperf3", "-c", address, "-p", "5201", "-t", str(IPERF_SECONDS), "-J",
                            timeout=IPERF_SECONDS + 30, rcs=(0, 1))
            doc = json.loads(out.stdout or "{}")
            if "error" not in doc and "sum_received" in doc.get("end", {}):
                bits: float = doc["end"]["sum_received"]["bits_per_second"]
                return bits / 1e9
            time.sleep(0.2)
        raise RuntimeError(f"iperf3 to {address} kept failing: {doc.get('error')}")
    finally:
        server.run.stop(proc)


def routed_veth_pair(run_: Run) -> tuple[Netns, Netns, str]:
    """client -> router namespace -> server over two veth pairs, no bridge, no NAT."""
    left, right = run_.subnet(), run_.subnet()
    client, router, server = run_.netns("rc"), run_.netns("rr"), run_.netns("rs")
    run_.veth(client, "eth0", router, "left")
    run_.veth(router, "right", server, "eth0")
    client.ip("addr", "add", f"{left[2]}/24", "dev", "eth0")
    router.ip("addr", "add", f"{left[1]}/24", "dev", "left")
    router.ip("addr", "add", f"{right[1]}/24", "dev", "right")
    server.ip("addr", "add", f"{right[2]}/24", "dev", "eth0")
    client.ip("route", "add", "default", "via", str(left[1]))
    server.ip("route", "add", "default", "via", str(right[1]))
    router.sh("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    return client, server, str(right[2])


async def ours(bed: Bed) -> tuple[float, float, float]:
    """(seconds to apply 1,000 EIPs, Gbit/s through the first one, seconds to remove them all)."""
    dp = EipDataplane(EipSettings(netns_prefix=f"{bed.run.prefix}-e", garp_count=1), host_netns=bed.host.name)
    try:
        t = time.perf_counter()
        status = await dp.apply(bed.l2s, bed.l3s, bed.vms)
        applied = time.perf_counter() - t
        if len(status.applied) != OURS:
            raise RuntimeError(f"applied {len(status.applied)} EIPs: {status.errors}")
        through = iperf(bed.vm, bed.internet, eip_vip(next(iter(bed.vms.values()))))
        t = time.perf_counter()
        await dp.apply(bed.l2s, bed.l3s, {})
        removed = time.perf_counter() - t
    finally:
        await dp.apply({}, {}, {})
        await dp.close()
    return applied, through, removed


def eip_vip(vm: VmSpec) -> str:
    """The VIP bound to a bench VM (each has one NIC with an EIP)."""
    if (eip := vm.nics[0].eip) is None:
        raise ValueError(f"VM {vm.uuid} has no EIP")
    return eip.vip


def gateway(l3: L3Spec) -> str:
    if l3.gateway is None:
        raise ValueError(f"L3 {l3.uuid} has no gateway")
    return l3.gateway


def zstack_nat_rules(vip: str, ip: str, pub: str, pri: str) -> list[list[str]]:
    """deip.py's iptables rules for one EIP: a DNAT, a FORWARD and an SNAT chain named after the VIP."""
    dnat, fwd, snat = f"DNAT-{vip}", f"FWD-{vip}", f"SNAT-{vip}"
    return [
        ["-t", "nat", "-N", dnat], ["-t", "nat", "-A", "PREROUTING", "-d", f"{vip}/32", "-j", dnat],
        ["-t", "nat", "-A", dnat, "-j", "DNAT", "--to-destination", ip],
        ["-N", fwd], ["-A", "FORWARD", "-i", pri, "-o", pub, "-j", fwd],
        ["-A", "FORWARD", "-i", pub, "-o", pri, "-j", fwd], ["-A", fwd, "-j", "ACCEPT"],
        ["-t", "nat", "-N", snat], ["-t", "nat", "-A", "POSTROUTING", "-s", f"{ip}/32", "-j", snat],
        ["-t", "nat", "-A", snat, "-j", "SNAT", "--to-source", vip],
    ]


def zstack_apply(bed: Bed, i: int, vm: VmSpec) -> None:
    """One EIP the way deip.py's script does it (its commands, without the grep checks)."""
    nic, ns = vm.nics[0], f"{bed.run.prefix}-z{i}"
    vip, gw, host = eip_vip(vm), gateway(bed.private_l3), ["ip", "-n", bed.host.name]
    pub_o, pub_i, pri_o, pri_i = f"z{i}eo", f"z{i}ei", f"z{i}o", f"z{i}i"
    inns, ipt = ["ip", "-n", ns], ["ip", "netns", "exec", ns, "iptables"]
    chain, eb = f"{nic.tap}-gw", ["ip", "netns", "exec", bed.host.name, "ebtables", "-t", "nat"]
    run(["ip", "netns", "add", ns])
    for o, n, br in ((pub_o, pub_i, bed.public_l2.bridge), (pri_o, pri_i, bed.private_l2.bridge)):
        run([*host, "link", "add", o, "type", "veth", "peer", "name", n])
        run([*host, "link", "set", o, "up"])
        run([*host, "link", "set", o, "master", br])
        run([*host, "link", "set", n, "netns", ns])
    run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    for dev, addr, plen in ((pub_i, vip, PUBLIC.prefixlen), (pri_i, gw, PRIVATE.prefixlen)):
        run([*inns, "addr", "add", f"{addr}/{plen}", "dev", dev])
        run([*inns, "link", "set", dev, "up"])
    mac = run([*inns, "-o", "link", "show", pri_i]).stdout.split("link/ether ")[1].split()[0]
    run([*eb, "-N", chain])
    run([*eb, "-I", "PREROUTING", "-i", nic.tap, "-j", chain])
    run([*eb, "-A", chain, "-p", "ARP", "--arp-op", "Request", "--arp-ip-dst", gw, "-j", "arpreply",
         "--arpreply-mac", mac])
    for rule in zstack_nat_rules(vip, nic.ip, pub_i, pri_i):
        run([*ipt, *rule])
    run([*inns, "route", "add", "default", "via", gateway(bed.public_l3)])


def zstack_delete(bed: Bed, i: int, vm: VmSpec) -> None:
    """deip.py's delete script: the namespace (its veths go with it) and the ebtables chain."""
    tap = vm.nics[0].tap
    eb = ["ip", "netns", "exec", bed.host.name, "ebtables", "-t", "nat"]
    run(["ip", "netns", "del", f"{bed.run.prefix}-z{i}"])
    run([*eb, "-D", "PREROUTING", "-i", tap, "-j", f"{tap}-gw"])
    run([*eb, "-F", f"{tap}-gw"])
    run([*eb, "-X", f"{tap}-gw"])


def peer(bed: Bed) -> tuple[float, float]:
    """(seconds to apply, seconds to remove) for PEER EIPs the ZStack way, both scaled to OURS."""
    vms = list(bed.vms.values())[:PEER]
    done = 0
    try:
        t = time.perf_counter()
        for i, vm in enumerate(vms):
            zstack_apply(bed, i, vm)
            done = i + 1
        applied = time.perf_counter() - t
        t = time.perf_counter()
        for i, vm in enumerate(vms):
            zstack_delete(bed, i, vm)
        removed = time.perf_counter() - t
        done = 0
    finally:
        for i in range(done):
            run(["ip", "netns", "del", f"{bed.run.prefix}-z{i}"], rcs=(0, 1))
    return applied * SCALE, removed * SCALE


def main() -> None:
    with Run() as run_:
        bed = Bed(run_)
        ours_apply, through_eip, ours_remove = asyncio.run(ours(bed))
        peer_apply, peer_remove = peer(bed)
        client, server, address = routed_veth_pair(run_)
        plain = iperf(server, client, address)
    print(f"{OURS} EIPs, one host; peer measured on {PEER} and scaled x{SCALE}", file=sys.stderr)
    print(f"eip remove: ours={ours_remove:.2f} peer={peer_remove:.2f} ratio={ours_remove / peer_remove:.4f}")
    print(f"eip iperf3 (Gbit/s): through_eip={through_eip:.2f} plain_routed_veth={plain:.2f} "
          f"ratio={through_eip / plain:.3f}")
    print(f"eip: ours={ours_apply:.2f} peer={peer_apply:.2f} ratio={ours_apply / peer_apply:.4f}")


if __name__ == "__main__":
    main()
