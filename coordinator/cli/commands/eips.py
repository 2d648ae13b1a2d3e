"""`hs eip …`: elastic IPs of a public L3, attached to a VM's NIC.

`attach` takes the NIC as `hs vm show` shows it, by its MAC or IP address (or its uuid): among the NICs of the
VM named, or without one among every VM's, whose VM it then attaches to.
"""

from __future__ import annotations

import argparse
from typing import Any

from coordinator.cli.command import Command, Group
from coordinator.cli.commands.resources import EIP, L3, VM
from coordinator.cli.declare import Call, Named, Resource, arg, dig
from coordinator.cli.errors import CliError
from coordinator.cli.names import Found, pick
from coordinator.cli.session import Session, where

EIP_ARG = arg("eip", ref=EIP)
# an EIP prints its L3 and VM by name, its NIC by the NIC's address
NAMES = (Named("public_l3_uuid", (L3,)), Named("vm_uuid", (VM,)),
         Named("nic_uuid", (VM,), within="spec.nics", name="ip"))
NIC = Resource("NIC", {}, name_field="ip", also_named=("mac",), name_word="address")  # listed inside VMs: _nics
NIC_ARG = arg("--nic", help="the NIC: its uuid, MAC or IP address (default: the VM's default NIC)")
ATTACH = Call("POST", "/v1/eips/{eip}/attach", body={"vm_uuid": "vm", "nic_uuid": "nic"})


async def attach(s: Session, a: argparse.Namespace) -> object:
    """Attach to the NIC --nic names, of the VM given or of any VM (then the NIC's VM), else to the VM's default."""
    if a.nic is not None:
        nics = [(Found(nic, vm.collection), vm) for vm in ([a.vm] if a.vm else await s.rows(VM)) for nic in _nics(vm)]
        scope = f"on VM {dig(a.vm.row, VM.name_field)}" if a.vm else "on any VM"
        a.nic = pick(NIC, [nic for nic, _ in nics], a.nic.lower(), f"{where(NIC_ARG, ATTACH)}, {scope}")  # as stored
        a.vm = next(vm for nic, vm in nics if nic is a.nic)
    elif a.vm is None:
        raise CliError("give the VM, its NIC (--nic), or both")
    return await s.send(ATTACH, a)


def _nics(vm: Found) -> list[dict[str, Any]]:
    nics = dig(vm.row, "spec.nics")
    return nics if isinstance(nics, list) else []


GROUP = Group("eip", "elastic IPs: a public address NATed to a VM's NIC", (
    Command("create", "allocate an EIP",
            Call("POST", "/v1/eips", body={"name": "name", "public_l3_uuid": "l3", "vip": "vip"}),
            arg("name"), arg("--l3", required=True, ref=L3, help="public L3"), arg("--vip"), names=NAMES),
    Command("list", "EIPs", Call("GET", "/v1/eips"), columns=("uuid", "name", "vip", "public_l3", "vm", "nic"),
            names=NAMES),
    Command("show", "one EIP", Call("GET", "/v1/eips/{eip}"), EIP_ARG, names=NAMES),
    Command("attach", "attach an EIP to a VM's NIC", attach,
            EIP_ARG, arg("vm", nargs="?", ref=VM, help="the VM (default: the one whose NIC --nic names)"), NIC_ARG,
            names=NAMES),
    Command("detach", "detach an EIP", Call("POST", "/v1/eips/{eip}/detach"), EIP_ARG, names=NAMES),
    Command("delete", "delete an EIP", Call("DELETE", "/v1/eips/{eip}"), EIP_ARG),
))
