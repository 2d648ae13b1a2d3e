"""The EC2 instance metadata API at the metadata address: what stock cloud-init's Ec2 datasource crawls.

cloud-init probes 2021-03-23, 2018-09-24 and 2016-09-02, then falls back to 2009-04-04; all are served,
plus `latest`. The tree is built once per caller and desired-state snapshot (`Caller.memo`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from aiohttp import web

from agentkit.model import NicSpec
from flatnet.metadata.flavours import tree
from flatnet.metadata.flavours.base import Flavour, Listen
from flatnet.metadata.flavours.tree import Dir, Node
from flatnet.metadata.http.routes import Request, Route
from flatnet.metadata.instance import Caller

VERSIONS = ("2009-04-04", "2016-09-02", "2018-09-24", "2021-03-23", "latest")
_NETWORK_SINCE = "2011-01-01"  # network/interfaces/macs appeared then; "latest" sorts after every date


def root(caller: Caller, version: str) -> Dir:
    """`/<version>/`: meta-data, dynamic and (when there is any) user-data."""
    identity = json.dumps(caller.identity_document(), indent=2)
    children: dict[str, Node] = {
        "dynamic": Dir({"instance-identity": Dir({"document": identity})}),
        "meta-data": meta_data(caller, version),
    }
    userdata = caller.userdata
    if userdata is not None:
        children["user-data"] = userdata
    return Dir(children)


def meta_data(caller: Caller, version: str) -> Dir:
    primary = caller.primary
    md: dict[str, Node] = {
        "ami-id": caller.vm.image_uuid or "",
        "ami-launch-index": "0",
        "hostname": caller.hostname,
        "instance-id": caller.vm.uuid,
        "instance-type": caller.instance_type,
        "local-hostname": caller.hostname,
        "local-ipv4": primary.ip,
        "mac": primary.mac,
        "placement": Dir({
            "availability-zone": caller.settings.availability_zone,
            "region": caller.settings.region,
        }),
    }
    if primary.eip:
        md["public-ipv4"] = primary.eip.vip
    if caller.ssh_keys:
        md["public-keys"] = public_keys(caller)
    if version >= _NETWORK_SINCE:
        macs: dict[str, Node] = {nic.mac: interface(caller, nic)
                                 for nic in sorted(caller.vm.nics, key=lambda n: n.device_index)}
        md["network"] = Dir({"interfaces": Dir({"macs": Dir(macs)})})
    return Dir(dict(sorted(md.items())))


def public_keys(caller: Caller) -> Dir:
    """EC2 lists key i as `i=<name>` and serves it at `i/openssh-key`."""
    keys: dict[str, Node] = {str(i): Dir({"openssh-key": key}) for i, (_, key) in enumerate(caller.ssh_keys)}
    labels = {str(i): f"{i}={' '.join(name.split())}" for i, (name, _) in enumerate(caller.ssh_keys)}
    return Dir(keys, labels)


def interface(caller: Caller, nic: NicSpec) -> Dir:
    """network/interfaces/macs/<mac>/: what cloud-init turns into network config for that NIC."""
    d: dict[str, Node] = {
        "device-number": str(nic.device_index),
        "interface-id": nic.uuid,
        "local-hostname": caller.hostname,
        "local-ipv4s": nic.ip,
        "mac": nic.mac,
        "subnet-id": nic.l3_uuid,
    }
    l3 = caller.l3s.get(nic.l3_uuid)
    if l3 is not None:
        d["subnet-ipv4-cidr-block"] = str(l3.network)
    if nic.eip:
        d["ipv4-associations"] = Dir({nic.eip.vip: nic.ip})
        d["public-ipv4s"] = nic.eip.vip
    return Dir(dict(sorted(d.items())))


def versions(request: Request, match: Mapping[str, str]) -> web.Response:
    return web.Response(text="\n".join(VERSIONS))


def handle(request: Request, match: Mapping[str, str]) -> web.Response:
    caller, version = request.caller, match["version"]
    return tree.serve(caller.memo(("ec2", version), lambda: root(caller, version)), match["path"])


ROUTES = [
    Route("GET", "/", versions),
    Route("GET", f"/(?P<version>{'|'.join(re.escape(v) for v in VERSIONS)})(?P<path>(?:/.*)?)", handle),
]
FLAVOUR = Flavour("ec2", Listen.METADATA_ADDRESS, ROUTES)
