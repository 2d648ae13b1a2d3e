"""What the service plans from desired state (pure; the kernel side is in tests/functional/flatnet)."""

from __future__ import annotations

from agentkit.model import DnsRecord, L2Spec, L3Spec, NicSpec, VmSpec
from flatnet.plan import plan

L2 = L2Spec(uuid="l2", name="phys", physical_interface="eth1")


def l3(uuid: str, l2: str = "l2", **kw) -> L3Spec:
    base = {"cidr": "198.18.7.0/24", "services": ["DHCP"], "dhcp_address": "198.18.7.2"}
    return L3Spec(uuid=uuid, name=uuid, l2_uuid=l2, **{**base, **kw})


def vm(uuid: str, *l3s: str) -> VmSpec:
    nics = [NicSpec(uuid=f"{uuid}-{i}", l3_uuid=u, mac=f"52:54:00:00:{len(uuid):02x}:{i:02x}",
                    ip=f"198.18.7.{10 + i}", default=i == 0) for i, u in enumerate(l3s)]
    return VmSpec(uuid=uuid, name=uuid, nics=nics)


def test_plan_serves_only_usable_l3s_with_local_nics():
    l3s = {f"l3/{x.uuid}": x for x in (
        l3("ok"), l3("no-dhcp", services=["DNS"]), l3("no-address", dhcp_address=None),
        l3("outside", dhcp_address="10.0.0.2"), l3("no-l2", l2="missing"), l3("no-vms"))}
    vms = {"vm/a": vm("a", "ok", "no-dhcp", "no-address"), "vm/b": vm("b", "outside", "no-l2")}
    dns = {"dns/ok/1": DnsRecord(l3_uuid="ok", name="far", ip="198.18.7.99"),
           "dns/x/1": DnsRecord(l3_uuid="x", name="x", ip="1.2.3.4")}
    served = plan({"l2/l2": L2}, l3s, vms, dns)
    assert list(served) == ["ok"]
    s = served["ok"]
    assert [nic.uuid for _, nic in s.nics] == ["a-0"]
    assert [r.name for r in s.records] == ["far"]
    assert s.addresses == frozenset({("198.18.7.2", 24), ("169.254.169.254", 32)})
    assert s.neighbours == {"198.18.7.10": "52:54:00:00:01:00"}
