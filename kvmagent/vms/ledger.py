"""What the VM reconciler's parts share about this host's VMs.

One event loop runs every part, so the ledger needs no locks; the reconciler's lock orders the passes
that change it. `meta` mirrors the `<metadata>` libvirt keeps in each of our domains (the store that
survives agent restarts); everything else is rebuilt from the desired state and libvirt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agentkit.model import L2Spec, L3Spec, VmSpec
from kvmagent.domain_xml import DomainMeta


@dataclass
class Ledger:
    desired: dict[str, VmSpec] = field(default_factory=dict)  # the last complete snapshot, by VM uuid
    l2s: dict[str, L2Spec] = field(default_factory=dict)
    l3s: dict[str, L3Spec] = field(default_factory=dict)
    configs: dict[str, object] = field(default_factory=dict)
    meta: dict[str, DomainMeta] = field(default_factory=dict)  # as last read from or written to libvirt
    errors: dict[str, str] = field(default_factory=dict)  # the last failure to realize a VM's spec

    def ours(self, vm_uuid: str) -> bool:
        """A VM this agent defined or is asked to run (foreign domains are never touched)."""
        return vm_uuid in self.meta or vm_uuid in self.desired
