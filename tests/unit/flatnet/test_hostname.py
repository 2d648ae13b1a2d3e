"""The guest host name: one rule, and the same answer from DHCP, DNS and every metadata flavour."""

from __future__ import annotations

import json

import pytest
from dnslib import QTYPE, DNSRecord

from agentkit.model import DnsRecord, L3Spec, NicSpec, Service, VmSpec
from flatnet.dhcp import codec as c
from flatnet.dhcp.leases import reservations
from flatnet.dhcp.server import DhcpResponder
from flatnet.dns.server import DnsResponder
from flatnet.dns.zone import Zone
from flatnet.hostname import domain_name, fqdn, hostname
from flatnet.metadata.flavours import cloudstack, ec2, openstack, tree
from flatnet.metadata.instance import Caller
from flatnet.metadata.settings import MetadataSettings

L3 = L3Spec(uuid="l3", name="flat", l2_uuid="l2", cidr="198.18.9.0/24", dhcp_address="198.18.9.2",
            domain=".Cloud.Test.", services=[Service.DHCP, Service.DNS, Service.USERDATA])
MAC = "52:54:00:00:09:0a"


@pytest.mark.parametrize("name, label", [
    ("My VM_1", "my-vm-1"), ("web", "web"), ("--Db--", "db"), ("!!!", "vm"), ("", "vm"), ("x" * 70, "x" * 63),
    ("a" * 62 + "-b", "a" * 62),
])
def test_a_vm_name_becomes_a_dns_label(name, label):
    assert hostname(name) == label


def test_the_domain_is_lower_case_without_dots_and_optional():
    assert domain_name(".Cloud.Test.") == "cloud.test"
    assert fqdn("My VM", ".Cloud.Test.") == "my-vm.cloud.test"
    assert fqdn("My VM", None) == "my-vm"


def dhcp_name(vm: VmSpec) -> str:
    """What a DHCP client makes of the OFFER: option 12, dot, option 15."""
    responder = DhcpResponder("198.18.9.2")
    responder.reservations = reservations(L3, [(vm, vm.nics[0])], lease_time=60)
    discover = c.DhcpPacket(chaddr=bytes.fromhex(MAC.replace(":", "")), options={c.OPT_MESSAGE_TYPE: b"\x01"})
    reply = responder.respond(c.build(discover))
    assert reply is not None
    options = c.parse(reply[0]).options
    return f"{options[c.OPT_HOSTNAME].decode()}.{options[c.OPT_DOMAIN].decode()}"


def dns_name(vm: VmSpec) -> str:
    """The PTR answer for the VM's address, after checking that the name resolves back to it."""
    responder = DnsResponder(Zone(L3.domain, [DnsRecord(l3_uuid=L3.uuid, name=vm.name, ip=vm.nics[0].ip)]), [])
    ptr = DNSRecord.parse(responder.local(DNSRecord.question("10.9.18.198.in-addr.arpa", "PTR").pack())[1])
    name = str(ptr.rr[0].rdata).rstrip(".")
    a = DNSRecord.parse(responder.local(DNSRecord.question(name).pack())[1])
    assert [(rr.rtype, str(rr.rdata)) for rr in a.rr] == [(QTYPE.A, vm.nics[0].ip)]
    return name


def metadata_names(vm: VmSpec) -> set[str]:
    """What the EC2, OpenStack and CloudStack flavours serve as the host name."""
    caller = Caller(vm, vm.nics[0], L3, {L3.uuid: L3}, MetadataSettings())
    ec2_root, cs_root = ec2.root(caller, "latest"), cloudstack.root(caller)
    os_meta = json.loads(tree.serve(openstack.files(caller), "meta_data.json").text)
    return {tree.serve(ec2_root, "meta-data/hostname").text, tree.serve(ec2_root, "meta-data/local-hostname").text,
            tree.serve(cs_root, "meta-data/local-hostname").text, os_meta["hostname"], caller.hostname}


@pytest.mark.parametrize("name, expected", [("!!!", "vm.cloud.test"), ("Web Server_01", "web-server-01.cloud.test")])
def test_dhcp_dns_and_metadata_give_a_vm_the_same_hostname(name, expected):
    nic = NicSpec(uuid="nic", l3_uuid=L3.uuid, mac=MAC, ip="198.18.9.10", default=True)
    vm = VmSpec(uuid="0badcafe-0000-4000-8000-000000000001", name=name, nics=[nic])
    assert dhcp_name(vm) == dns_name(vm) == expected
    assert metadata_names(vm) == {expected}
