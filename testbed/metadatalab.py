"""A host with one flat L3 for metadata tests: bridge, service namespace and VM namespaces.

Layout (all namespaces tagged by the run):
  host: the L2 bridge; VM veth host ends named like `NicSpec.tap`, the service veth's host end named as
        flatnet names it (`hsf` + the L3's short id: a port of the agent's for anti-spoofing)
  svc:  veth `md0` holding the L3's DHCP address/24 and 169.254.169.254/32 and a permanent neighbour entry
        for every VM NIC (what flatnet's namespaces provide in production)
  vmN:  veth `eth0` with the NIC's MAC and address, a route to 169.254.169.254 via the DHCP address
        (what DHCP option 121 gives a guest)
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from agentkit.addr import METADATA_ADDRESS as IMDS_ADDRESS
from agentkit.model import L2Spec, L3Spec, NicSpec, Service, VmSpec
from flatnet.l3ns import HOST_DEV_PREFIX, short_id
from flatnet.metadata import MetadataService, MetadataSettings
from testbed.netns import Netns, Run


@dataclass
class LabVm:
    spec: VmSpec
    ns: Netns

    @property
    def nic(self) -> NicSpec:
        return self.spec.nics[0]


@dataclass
class MetadataLab:
    run: Run
    host: Netns
    svc: Netns
    l2: L2Spec
    l3: L3Spec
    vms: list[LabVm] = field(default_factory=list)
    service: MetadataService | None = None

    @classmethod
    def create(cls, run: Run, imds: str = "optional") -> MetadataLab:
        net = run.subnet()
        l2 = L2Spec(uuid=f"{run.tag}{secrets.token_hex(6)}", name="l2", physical_interface="none")
        l3 = L3Spec(uuid=secrets.token_hex(16), name="flat", l2_uuid=l2.uuid, cidr=str(net), gateway=str(net[1]),
                    dhcp_address=str(net[2]), dns_servers=[str(net[1])], domain="lab.internal",
                    services=[Service.DHCP, Service.USERDATA], imds=imds)
        host, svc = run.netns("host"), run.netns("svc")
        host.ip("link", "add", l2.bridge, "type", "bridge")
        host.ip("link", "set", l2.bridge, "up")
        port = HOST_DEV_PREFIX + short_id(l3.uuid)
        run.veth(host, port, svc, "md0")
        host.ip("link", "set", port, "master", l2.bridge)
        svc.ip("addr", "add", f"{l3.dhcp_address}/{net.prefixlen}", "dev", "md0")
        svc.ip("addr", "add", f"{IMDS_ADDRESS}/32", "dev", "md0")
        return cls(run, host, svc, l2, l3)

    def add_vm(self, name: str, *, userdata: str | None = None, ssh_keys: dict[str, str] | None = None) -> LabVm:
        index = len(self.vms)
        mac = f"52:54:00:{secrets.token_hex(2)[:2]}:00:{index + 10:02x}"
        nic = NicSpec(uuid=secrets.token_hex(16), l3_uuid=self.l3.uuid, mac=mac, ip=str(self.l3.network[index + 10]),
                      default=True)
        spec = VmSpec(uuid=secrets.token_hex(16), name=name, nics=[nic], userdata=userdata, ssh_keys=ssh_keys or {},
                      image_uuid=secrets.token_hex(16))
        vm = LabVm(spec, self.attach(f"vm{index}", nic.tap, nic.mac, nic.ip))
        self.svc.ip("neigh", "replace", nic.ip, "lladdr", nic.mac, "dev", "md0", "nud", "permanent")
        self.vms.append(vm)
        return vm

    def attach(self, role: str, tap: str, mac: str, ip: str) -> Netns:
        """A namespace on the bridge through `tap`, sending as (mac, ip): a VM, or one pretending to be."""
        ns = self.run.netns(role)
        self.run.veth(self.host, tap, ns, "eth0")
        self.host.ip("link", "set", tap, "master", self.l2.bridge)
        ns.ip("link", "set", "eth0", "address", mac)
        ns.ip("addr", "add", f"{ip}/{self.l3.network.prefixlen}", "dev", "eth0")
        ns.ip("route", "add", f"{IMDS_ADDRESS}/32", "via", str(self.l3.dhcp_address))
        return ns

    def state(self) -> tuple[dict[str, L3Spec], dict[str, VmSpec]]:
        """The desired state `MetadataService.update` takes."""
        return {self.l3.uuid: self.l3}, {vm.spec.uuid: vm.spec for vm in self.vms}

    async def serve(self, settings: MetadataSettings | None = None) -> MetadataService:
        """Start the metadata server for the lab's namespace and current state (the caller closes it)."""
        self.service = MetadataService(settings)
        await self.service.update(*self.state())
        await self.service.add_namespace(self.l3.uuid, self.svc.name)
        return self.service
