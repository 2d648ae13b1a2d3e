"""The OpenStack metadata API at <metadata address>/openstack: what cloud-init's OpenStack datasource reads.

cloud-init picks the newest version it knows from the listing at `/openstack`; every listed version
serves the same documents. Its crawl also reads EC2's `latest/meta-data/`, served by the ec2 module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from agentkit.model import L3Spec, NicSpec, Service
from flatnet.metadata.flavours import tree
from flatnet.metadata.flavours.base import Flavour, Listen
from flatnet.metadata.flavours.tree import Dir, Node
from flatnet.metadata.http.routes import Request, Route
from flatnet.metadata.instance import Caller

VERSIONS = (
    "2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30", "2016-10-06", "2017-02-22",
    "2018-08-27", "latest",
)


def meta_data(caller: Caller) -> dict[str, Any]:
    keys = caller.ssh_keys
    return {
        "uuid": caller.vm.uuid,
        "name": caller.vm.name,
        "hostname": caller.hostname,
        "availability_zone": caller.settings.availability_zone,
        "launch_index": 0,
        "project_id": caller.settings.account_id,
        "public_keys": dict(keys),
        "keys": [{"name": name, "type": "ssh", "data": key} for name, key in keys],
        "meta": {},
        "devices": [],
    }


def network_data(caller: Caller) -> dict[str, Any]:
    """Links and networks of every NIC of the VM; DHCP-served L3s are `ipv4_dhcp`, others static."""
    links, networks, dns = [], [], []
    for i, nic in enumerate(sorted(caller.vm.nics, key=lambda n: n.device_index)):
        l3 = caller.l3s.get(nic.l3_uuid)
        links.append({"id": nic.tap, "type": "bridge", "ethernet_mac_address": nic.mac, "vif_id": nic.uuid,
                      "mtu": l3.mtu if l3 else None})
        if l3 is None:
            continue
        networks.append({"id": f"network{i}", "link": nic.tap, "network_id": l3.uuid, **_addressing(nic, l3)})
        dns += [a for a in l3.dns_servers if a not in dns]
    return {"links": links, "networks": networks, "services": [{"type": "dns", "address": a} for a in dns]}


def _addressing(nic: NicSpec, l3: L3Spec) -> dict[str, Any]:
    if Service.DHCP in l3.services:
        return {"type": "ipv4_dhcp"}
    routes = [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": l3.gateway}] if nic.default and l3.gateway else []
    return {"type": "ipv4", "ip_address": nic.ip, "netmask": str(l3.network.netmask), "routes": routes}


def files(caller: Caller) -> Dir:
    docs: dict[str, Node] = {
        "meta_data.json": json.dumps(meta_data(caller)),
        "network_data.json": json.dumps(network_data(caller)),
        "vendor_data.json": "{}",
        "vendor_data2.json": "{}",
    }
    userdata = caller.userdata
    if userdata is not None:
        docs["user_data"] = userdata
    return Dir(dict(sorted(docs.items())))


def versions(request: Request, match: Mapping[str, str]) -> web.Response:
    return web.Response(text="\n".join(VERSIONS))


def handle(request: Request, match: Mapping[str, str]) -> web.Response:
    caller = request.caller
    node = tree.walk(caller.memo("openstack", lambda: files(caller)), match["path"].split("/"))
    if isinstance(node, str) and request.path.endswith(".json"):
        return web.Response(text=node, content_type="application/json")
    return tree.respond(node)


ROUTES = [
    Route("GET", "/openstack/?", versions),
    Route("GET", f"/openstack/(?P<version>{'|'.join(VERSIONS)})(?P<path>(?:/.*)?)", handle),
]
FLAVOUR = Flavour("openstack", Listen.METADATA_ADDRESS, ROUTES)
