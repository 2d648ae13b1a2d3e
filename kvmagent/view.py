"""A host's desired state split by kind: what every reconciler of the agent reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentkit.model import CephSecretSpec, DnsRecord, Held, L2Spec, L3Spec, PrimaryStorageSpec, StoredVolumeSpec, VmSpec


@dataclass(frozen=True)
class HostView:
    rev: int = 0
    l2s: dict[str, L2Spec] = field(default_factory=dict)
    l3s: dict[str, L3Spec] = field(default_factory=dict)
    vms: dict[str, VmSpec] = field(default_factory=dict)
    dns: dict[str, DnsRecord] = field(default_factory=dict)
    configs: dict[str, object] = field(default_factory=dict)
    cephsecrets: dict[str, CephSecretSpec] = field(default_factory=dict)
    storages: dict[str, PrimaryStorageSpec] = field(default_factory=dict)
    volumes: dict[str, StoredVolumeSpec] = field(default_factory=dict)
    held: dict[str, Held] = field(default_factory=dict)  # by key: objects left as they are (`Held`)

    @classmethod
    def from_state(cls, state: dict[str, object], rev: int) -> HostView:
        buckets: dict[str, dict[str, Any]] = {k: {} for k in ("l2", "l3", "vm", "dns", "config", "cephsecret",
                                                               "storage", "volume")}
        held = {}
        for key, value in state.items():
            kind, _, ident = key.partition("/")
            if isinstance(value, Held):
                held[key] = value
            elif kind in buckets:
                buckets[kind][ident] = value
        return cls(rev=rev, l2s=buckets["l2"], l3s=buckets["l3"], vms=buckets["vm"], dns=buckets["dns"],
                   configs=buckets["config"], cephsecrets=buckets["cephsecret"], storages=buckets["storage"],
                   volumes=buckets["volume"], held=held)

    def held_of(self, kind: str) -> set[str]:
        """The uuids of `kind`'s objects left as they are: whoever removes what is not in the view keeps them."""
        return {key.partition("/")[2] for key in self.held if key.partition("/")[0] == kind}
