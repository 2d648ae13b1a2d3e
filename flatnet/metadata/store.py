"""The in-memory index the metadata server answers from: (L3, IP address) -> the VM NIC holding it.

`update` builds a new immutable snapshot from the whole desired state and swaps it in with one
assignment, so a request sees either the old or the new state, and a change is served at once.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from agentkit.model import L3Spec, Service, VmSpec
from flatnet.metadata.instance import Caller
from flatnet.metadata.settings import MetadataSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    l3s: dict[str, L3Spec] = field(default_factory=dict)
    callers: dict[tuple[str, str], Caller] = field(default_factory=dict)


class Store:
    """Desired state indexed for identification; the only mutable state of the metadata server."""

    def __init__(self, settings: MetadataSettings):
        self.settings = settings
        self.snapshot = Snapshot()

    def update(self, l3s: dict[str, L3Spec], vms: dict[str, VmSpec]) -> None:
        """Replace the whole state (maps keyed by uuid or stream key). An address claimed by two NICs of one
        L3 names nobody: never the wrong VM."""
        by_uuid = {l3.uuid: l3 for l3 in l3s.values()}
        owners = [((nic.l3_uuid, nic.ip), vm, nic) for vm in vms.values() for nic in vm.nics if nic.l3_uuid in by_uuid]
        claims = Counter(key for key, _, _ in owners)
        for (l3_uuid, ip), n in claims.items():
            if n > 1:
                log.error("address claimed by %d NICs, not served", n, extra={"fields": {"l3": l3_uuid, "ip": ip}})
        callers = {key: Caller(vm, nic, by_uuid[nic.l3_uuid], by_uuid, self.settings)
                   for key, vm, nic in owners if claims[key] == 1}
        self.snapshot = Snapshot(by_uuid, callers)

    def l3(self, l3_uuid: str) -> L3Spec | None:
        return self.snapshot.l3s.get(l3_uuid)

    def serves(self, l3_uuid: str) -> bool:
        """Whether the L3 offers the Userdata service (namespaces of DHCP-only L3s get our sockets too)."""
        l3 = self.snapshot.l3s.get(l3_uuid)
        return l3 is not None and Service.USERDATA in l3.services

    def caller(self, l3_uuid: str, ip: str) -> Caller | None:
        """The NIC with address `ip` on L3 `l3_uuid`."""
        return self.snapshot.callers.get((l3_uuid, ip))
