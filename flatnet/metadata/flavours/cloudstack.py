"""The CloudStack-style API of ZStack 1.0 on the L3's DHCP server address (its "virtual router").

cloud-init's CloudStack datasource finds the server from the DHCP lease (server identifier) and reads
`http://<dhcp address>/latest/user-data` and the flat `latest/meta-data/` listing. Values describe the
NIC the request came through, as a per-network virtual router would.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from flatnet.metadata.flavours import tree
from flatnet.metadata.flavours.base import Flavour, Listen
from flatnet.metadata.flavours.tree import Dir, Node
from flatnet.metadata.http.routes import Request, Route
from flatnet.metadata.instance import Caller


def root(caller: Caller) -> Dir:
    nic = caller.nic
    md: dict[str, Node] = {
        "availability-zone": caller.settings.availability_zone,
        "instance-id": caller.vm.uuid,
        "local-hostname": caller.hostname,
        "local-ipv4": nic.ip,
        "service-offering": caller.instance_type,
        "vm-id": caller.vm.uuid,
    }
    if nic.eip:
        md["public-ipv4"] = nic.eip.vip
    if caller.ssh_keys:
        md["public-keys"] = "\n".join(key for _, key in caller.ssh_keys)
    children: dict[str, Node] = {"meta-data": Dir(dict(sorted(md.items())))}
    userdata = caller.userdata
    if userdata is not None:
        children["user-data"] = userdata
    return Dir(children)


def versions(request: Request, match: Mapping[str, str]) -> web.Response:
    return web.Response(text="latest")


def handle(request: Request, match: Mapping[str, str]) -> web.Response:
    caller = request.caller
    return tree.serve(caller.memo("cloudstack", lambda: root(caller)), match["path"])


ROUTES = [Route("GET", "/", versions), Route("GET", "/latest(?P<path>(?:/.*)?)", handle)]
FLAVOUR = Flavour("cloudstack", Listen.DHCP_ADDRESS, ROUTES)
