"""The plugin hook (how the metadata server joins the namespaces) and service changes, run in-process."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from agentkit.model import DnsRecord, L2Spec, L3Spec, NicSpec, VmSpec
from agentkit.netns import netns_socket
from flatnet.plan import ServedL3
from flatnet.service import FlatnetService
from flatnet.settings import FlatnetSettings
from testbed.flatnethost import NetnsLoop, SimHost, Switch, owned_namespaces
from testbed.netns import kill_namespace
from testbed.vmns import VmNs

pytestmark = pytest.mark.real


class Recorder:
    """A NamespacePlugin that listens on 169.254.169.254:8775/udp in each namespace, as the metadata server does."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.socks: dict[str, socket.socket] = {}

    async def attach(self, served: ServedL3, netns: str) -> None:
        self.calls.append(("attach", served.l3.uuid, os.path.exists(f"/run/netns/{netns}")))
        self.socks[served.l3.uuid] = netns_socket(netns, socket.AF_INET, socket.SOCK_DGRAM,
                                                  lambda s: s.bind(("169.254.169.254", 8775)))

    async def detach(self, l3_uuid: str) -> None:
        self.calls.append(("detach", l3_uuid))
        self.socks.pop(l3_uuid).close()

    async def update(self, l3s, vms) -> None:
        self.calls.append(("update", sorted(l3s), sorted(vms)))

    async def close(self) -> None:
        self.calls.append(("close",))


@pytest.fixture(scope="module")
def host(run):
    h = SimHost(run, "p", Switch(run))
    loop = NetnsLoop(h.ns.name)
    yield h, loop
    loop.close()
    for name in owned_namespaces(f"{run.prefix}-p-"):
        kill_namespace(name)


def test_plugins_attach_update_detach_around_the_namespace(run, host):
    h, loop = host
    l2 = L2Spec(uuid=uuid.uuid4().hex, name="phys", physical_interface="eth0")
    h.add_bridge(l2)
    net = run.subnet()
    l3 = L3Spec(uuid=uuid.uuid4().hex, name="flat", l2_uuid=l2.uuid, cidr=str(net), services=["DHCP", "DNS"],
                dhcp_address=str(net.network_address + 2), domain="p.test")
    nic = NicSpec(uuid=uuid.uuid4().hex, l3_uuid=l3.uuid, mac="52:54:00:3a:00:01", ip=str(net.network_address + 9),
                  default=True)
    vm = VmSpec(uuid=nic.uuid, name="p", nics=[nic])
    rec = Recorder()
    svc = FlatnetService(FlatnetSettings(netns_prefix=f"{run.prefix}-p-"), plugins=[rec])
    state = ({l2.uuid: l2}, {l3.uuid: l3}, {vm.uuid: vm}, {"r": DnsRecord(l3_uuid=l3.uuid, name="p", ip=nic.ip)})
    try:
        loop.run(svc.apply(*state))
        netns = svc.stats()[l3.uuid]["netns"]
        assert rec.calls == [("attach", l3.uuid, True), ("update", [l3.uuid], [vm.uuid])]
        assert "169.254.169.254:8775" in h.ns.sh("ip", "netns", "exec", netns, "ss", "-uln").stdout
        assert ":53 " in h.ns.sh("ip", "netns", "exec", netns, "ss", "-tln").stdout

        no_dns = l3.model_copy(update={"services": ["DHCP"]})
        loop.run(svc.apply(state[0], {l3.uuid: no_dns}, *state[2:]))
        assert rec.calls[2:] == [("detach", l3.uuid), ("attach", l3.uuid, True), ("update", [l3.uuid], [vm.uuid])]
        assert ":53 " not in h.ns.sh("ip", "netns", "exec", netns, "ss", "-tln").stdout
        vmns = VmNs(run, h, l2.bridge, nic, "pvm")
        assert vmns.udhcpc().ip == nic.ip

        loop.run(svc.apply({}, {}, {}, {}))
        assert rec.calls[5:] == [("detach", l3.uuid), ("update", [], [])]
        assert not os.path.exists(f"/run/netns/{netns}")
    finally:
        loop.run(svc.apply({}, {}, {}, {}))
        loop.run(svc.close())
    assert rec.calls[-1] == ("close",)
