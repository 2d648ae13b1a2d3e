"""`hs eip …`: elastic IPs of a public L3, attached to a VM's NIC."""

from __future__ import annotations

from coordinator.cli.command import Command, Group
from coordinator.cli.commands.resources import EIP, L3, VM
from coordinator.cli.declare import Call, Named, arg

EIP_ARG = arg("eip", ref=EIP)
# an EIP prints its L3 and VM by name, its NIC by the NIC's address
NAMES = (Named("public_l3_uuid", (L3,)), Named("vm_uuid", (VM,)),
         Named("nic_uuid", (VM,), within="spec.nics", name="ip"))

GROUP = Group("eip", "elastic IPs: a public address NATed to a VM's NIC", (
    Command("create", "allocate an EIP",
            Call("POST", "/v1/eips", body={"name": "name", "public_l3_uuid": "l3", "vip": "vip"}),
            arg("name"), arg("--l3", required=True, ref=L3, help="public L3"), arg("--vip"), names=NAMES),
    Command("list", "EIPs", Call("GET", "/v1/eips"), columns=("uuid", "name", "vip", "public_l3", "vm", "nic"),
            names=NAMES),
    Command("show", "one EIP", Call("GET", "/v1/eips/{eip}"), EIP_ARG, names=NAMES),
    Command("attach", "attach an EIP to a VM NIC",
            Call("POST", "/v1/eips/{eip}/attach", body={"vm_uuid": "vm", "nic_uuid": "nic"}),
            EIP_ARG, arg("vm", ref=VM), arg("--nic", help="the NIC's uuid (default: the VM's default NIC)"),
            names=NAMES),
    Command("detach", "detach an EIP", Call("POST", "/v1/eips/{eip}/detach"), EIP_ARG, names=NAMES),
    Command("delete", "delete an EIP", Call("DELETE", "/v1/eips/{eip}"), EIP_ARG),
))
