"""What every API flavour says about the calling VM: one place for names, user-data and the identity document.

`Caller` is the identified requester: the VM, the NIC the request came through and that NIC's L3. The
flavour modules (ec2, openstack, cloudstack) only change the shape in which these facts are served.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agentkit.model import L3Spec, NicSpec, VmSpec
from flatnet.hostname import fqdn
from flatnet.metadata.settings import MetadataSettings

T = TypeVar("T")


@dataclass(frozen=True)
class Caller:
    """The VM NIC a request was proven to come from, with the desired state needed to describe it."""

    vm: VmSpec
    nic: NicSpec
    l3: L3Spec
    l3s: dict[str, L3Spec]
    settings: MetadataSettings
    _memo: dict[Hashable, Any] = field(default_factory=dict, compare=False, repr=False)

    def memo(self, key: Hashable, build: Callable[[], T]) -> T:
        """`build()` once per desired-state snapshot: every update makes new Callers, so nothing goes stale."""
        try:
            kept: T = self._memo[key]
            return kept
        except KeyError:
            value = self._memo[key] = build()
            return value

    @property
    def primary(self) -> NicSpec:
        """The VM's default NIC: EC2's `mac`/`local-ipv4` describe device 0, whichever NIC asked."""
        return next((n for n in self.vm.nics if n.default), self.nic)

    @property
    def hostname(self) -> str:
        """The VM's host name (`flatnet.hostname`, as DHCP and DNS say), qualified with the default NIC's L3
        domain when it has one."""
        return fqdn(self.vm.name, self.l3s.get(self.primary.l3_uuid, self.l3).domain)

    @property
    def instance_type(self) -> str:
        return f"hs.c{self.vm.cpu}m{self.vm.memory_mb}"

    @property
    def ssh_keys(self) -> list[tuple[str, str]]:
        """(name, key) sorted by name, so that `public-keys/<index>` stays stable across updates."""
        return sorted(self.vm.ssh_keys.items())

    @property
    def userdata(self) -> bytes | None:
        """The VM's user-data; with none but ssh keys, a `#cloud-config` that installs the keys (seeds 1.0)."""
        if self.vm.userdata:
            return self.vm.userdata.encode()
        if not self.ssh_keys:
            return None
        lines = ["#cloud-config", "ssh_authorized_keys:"] + [f"  - {json.dumps(k)}" for _, k in self.ssh_keys]
        return ("\n".join(lines) + "\n").encode()

    def identity_document(self) -> dict[str, Any]:
        """EC2's dynamic/instance-identity/document, which cloud-init prefers for instance id and zone on AWS."""
        return {
            "accountId": self.settings.account_id,
            "architecture": "x86_64",
            "availabilityZone": self.settings.availability_zone,
            "billingProducts": None,
            "devpayProductCodes": None,
            "imageId": self.vm.image_uuid,
            "instanceId": self.vm.uuid,
            "instanceType": self.instance_type,
            "kernelId": None,
            "privateIp": self.primary.ip,
            "ramdiskId": None,
            "region": self.settings.region,
            "version": "2017-09-30",
        }
