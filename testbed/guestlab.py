"""One simulated KVM host whose guests turn hostile: the real flat services (DHCP, DNS, metadata) in their
own process, VM namespaces on the L2 bridge, and an upstream DNS server on the management network.

switch ── host: eth0 ─ L2 bridge ─ VM taps (victim, attacker, ...), the flat namespace
mgmt switch ── host: mgmt0 ── upstream DNS (testbed.dnsupstream: *.example.net, slow.example.net never in time)

VMs are configured as their DHCP lease would configure them (address, the metadata route via the DHCP
address, the default route), without running a client; `VmNs` runs the real clients when a test wants one.
"""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

from agentkit.addr import METADATA_ADDRESS
from agentkit.model import DnsRecord, L2Spec, L3Spec, NicSpec, VmSpec
from testbed.flatnethost import FlatnetHost, SimHost, Switch
from testbed.netns import Netns, Run
from testbed.vmns import VmNs


@dataclass
class GuestLab:
    run: Run
    host: SimHost
    l2: L2Spec
    l3: L3Spec
    upstream: str
    svc: FlatnetHost | None = None
    vms: dict[str, VmSpec] = field(default_factory=dict)
    ns: dict[str, VmNs] = field(default_factory=dict)

    @classmethod
    def create(cls, run: Run, role: str = "h", services: tuple[str, ...] = ("DHCP", "DNS", "Userdata"),
               gateway: bool = True) -> GuestLab:
        switch, mgmt = Switch(run, f"{role}sw"), Switch(run, f"{role}mg")
        host = SimHost(run, role, switch)
        l2 = L2Spec(uuid=uuid.uuid4().hex, name="phys", physical_interface="eth0")
        host.add_bridge(l2)
        net, mnet = run.subnet(), run.subnet()
        mgmt.plug(host.ns, "mgmt0")
        host.ns.ip("addr", "add", f"{mnet.network_address + 10}/24", "dev", "mgmt0")
        dns = run.netns(f"{role}dns")
        mgmt.plug(dns, "eth0")
        upstream = str(mnet.network_address + 53)
        dns.ip("addr", "add", f"{upstream}/24", "dev", "eth0")
        dns.popen([sys.executable, "-m", "testbed.dnsupstream"], log_name=f"{role}-dns-upstream")
        l3 = L3Spec(uuid=uuid.uuid4().hex, name="flat", l2_uuid=l2.uuid, cidr=str(net),
                    gateway=str(net.network_address + 1) if gateway else None, dns_servers=[upstream],
                    domain="cloud.test", services=list(services), dhcp_address=str(net.network_address + 2))
        return cls(run, host, l2, l3, upstream)

    def start(self, settings: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
              nofile: int | None = None) -> FlatnetHost:
        """The service process (metadata plugged in, with these MetadataSettings fields), then apply."""
        self.svc = FlatnetHost(self.host, settings=settings, metadata=metadata if metadata is not None else {},
                               nofile=nofile)
        self.apply()
        return self.svc

    def add_vm(self, role: str, index: int, userdata: str | None = None, plug: bool = True) -> VmSpec:
        """A VM with one NIC at the L3's address `index`; plugged (a running VM) or not (a stopped one)."""
        mac = f"52:54:00:{index >> 8:02x}:{index & 255:02x}:01"
        nic = NicSpec(uuid=uuid.uuid4().hex, l3_uuid=self.l3.uuid, mac=mac,
                      ip=str(self.l3.network.network_address + index), default=True)
        vm = VmSpec(uuid=uuid.uuid4().hex, name=f"{role} vm", nics=[nic], userdata=userdata)
        self.vms[role] = vm
        if plug:
            self.ns[role] = self.plug(role, nic)
        return vm

    def plug(self, role: str, nic: NicSpec, l3: L3Spec | None = None, bridge: str | None = None) -> VmNs:
        """A VM namespace on the (L2's) bridge as `nic`, configured as its lease would configure it."""
        l3 = l3 or self.l3
        vm = VmNs(self.run, self.host, bridge or self.l2.bridge, nic, f"{self.host.role}{role}")
        vm.ns.ip("addr", "add", f"{nic.ip}/{l3.network.prefixlen}", "dev", vm.ifname)
        vm.ns.ip("route", "add", f"{METADATA_ADDRESS}/32", "via", str(l3.dhcp_address))
        if l3.gateway:
            vm.ns.ip("route", "add", "default", "via", l3.gateway)
        return vm

    def records(self) -> list[DnsRecord]:
        return [DnsRecord(l3_uuid=self.l3.uuid, name=vm.name, ip=vm.nics[0].ip) for vm in self.vms.values()]

    def apply(self, l3s: list[L3Spec] | None = None, vms: list[VmSpec] | None = None,
              l2s: list[L2Spec] | None = None) -> dict:
        assert self.svc is not None
        return self.svc.apply(l2s or [self.l2], l3s or [self.l3], vms if vms is not None else list(self.vms.values()),
                              self.records())

    def netns(self) -> Netns:
        """The flat namespace of the L3."""
        assert self.svc is not None
        return Netns(self.run, self.svc.stats()[self.l3.uuid]["netns"])

    def close(self) -> None:
        if self.svc is not None:
            self.svc.close()
