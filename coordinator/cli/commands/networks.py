"""`hs l2 …` and `hs l3 …`: layer-2 segments on a physical interface, and the IPv4 networks on them."""

from __future__ import annotations

import argparse

from coordinator.cli.command import Command, Group
from coordinator.cli.commands.resources import L2, L3
from coordinator.cli.declare import Call, Const, arg


def ip_range(text: str) -> dict[str, str]:
    """`START-END` as the API's IP range."""
    start, sep, end = text.partition("-")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected START-END")
    return {"start": start, "end": end}


L2_ARG = arg("l2", ref=L2)
L3_ARG = arg("l3", ref=L3)

L2_GROUP = Group("l2", "layer-2 networks: a bridge on a physical interface, optionally VLAN-tagged", (
    Command("create", "an L2 network on a physical interface",
            Call("POST", "/v1/l2-networks", body={"name": "name", "physical_interface": "interface", "vlan": "vlan"}),
            arg("name"), arg("--interface", required=True), arg("--vlan", type=int)),
    Command("list", "L2 networks", Call("GET", "/v1/l2-networks"),
            columns=("uuid", "name", "physical_interface", "vlan")),
    Command("show", "one L2 network", Call("GET", "/v1/l2-networks/{l2}"), L2_ARG),
    Command("delete", "delete an L2 network", Call("DELETE", "/v1/l2-networks/{l2}"), L2_ARG),
))

L3_GROUP = Group("l3", "IPv4 networks on an L2, with their ranges and services (DHCP, DNS, Userdata, EIP)", (
    Command("create", "an L3 network with its IP ranges and services",
            Call("POST", "/v1/l3-networks", body={
                "name": "name", "l2_uuid": "l2", "cidr": "cidr", "gateway": "gateway", "ip_ranges": "range",
                "dns_servers": "dns", "domain": "domain", "mtu": "mtu", "services": "service", "public": "public",
                "imds": "imds"}),
            arg("name"), arg("--l2", required=True, ref=L2), arg("--cidr", required=True), arg("--gateway"),
            arg("--range", type=ip_range, action="append", default=[], help="START-END, repeatable"),
            arg("--dns", action="append", default=[]), arg("--domain"), arg("--mtu", type=int, default=1500),
            arg("--service", action="append", default=[], help="DHCP, DNS, Userdata, EIP"),
            arg("--public", action="store_true"), arg("--imds", choices=["optional", "required"], default="optional")),
    Command("list", "L3 networks", Call("GET", "/v1/l3-networks"),
            columns=("uuid", "name", "cidr", "gateway", "dhcp_address", "services")),
    Command("show", "one L3 network", Call("GET", "/v1/l3-networks/{l3}"), L3_ARG),
    Command("delete", "delete an L3 network", Call("DELETE", "/v1/l3-networks/{l3}"), L3_ARG),
    Command("attach-service", "attach DHCP/DNS/Userdata/EIP",
            Call("POST", "/v1/l3-networks/{l3}/services", body={"service": "service", "provider": Const("flat")}),
            L3_ARG, arg("service")),
    Command("detach-service", "detach a service", Call("DELETE", "/v1/l3-networks/{l3}/services/{service}"),
            L3_ARG, arg("service")),
))
