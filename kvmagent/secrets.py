"""libvirt ceph secrets from the host stream, so RBD disks (`RbdDisk.secret_uuid`) can be opened.

The coordinator streams one `cephsecret/<fsid>` item per cluster with primary storage. This component
defines a private libvirt secret per item holding the cephx key, and removes the ceph secrets it made
that are no longer desired (ours carry the usage name prefix `hoststack `; others are left alone).
"""

from __future__ import annotations

import base64
from xml.sax.saxutils import escape

from agentkit.model import CephSecretSpec
from kvmagent.libvirt_driver import LibvirtDriver
from kvmagent.view import HostView

USAGE_PREFIX = "hoststack "


def secret_xml(spec: CephSecretSpec) -> str:
    usage = escape(f"{USAGE_PREFIX}client.{spec.user} {spec.fsid}")
    return (f"<secret ephemeral='no' private='yes'><uuid>{escape(spec.uuid)}</uuid>"
            f"<usage type='ceph'><name>{usage}</name></usage></secret>")


class SecretsComponent:
    name = "secrets"
    after: tuple[str, ...] = ()

    def __init__(self, driver: LibvirtDriver):
        self.driver = driver
        self._applied: dict[str, str] = {}  # uuid -> key, what this process has set

    async def apply(self, view: HostView, *, resync: bool = False) -> None:
        if not self.driver.connected:
            return  # applied again once libvirt is connected (the agent pokes every component)
        wanted, held = {s.uuid: s for s in view.cephsecrets.values()}, view.held_of("cephsecret")
        present = await self.driver.secrets()
        for uuid, spec in wanted.items():
            if uuid not in present or self._applied.get(uuid) != spec.key:
                await self.driver.set_secret(secret_xml(spec), base64.b64decode(spec.key))
                self._applied[uuid] = spec.key
        for uuid, usage in present.items():
            if uuid not in wanted and uuid not in held and usage.startswith(USAGE_PREFIX):
                await self.driver.remove_secret(uuid)
                self._applied.pop(uuid, None)

    async def close(self) -> None:
        return None
