"""Forgetting observed records of VMs that no longer exist (a loop of the elected replica).

A destroyed VM's `vm/<uuid>` record must outlive the VM for a while: `DELETE ...?wait=` waits for
it to say Destroyed, and a host that was down reports it when it comes back. So records are removed
here, not in the delete: once the VM is gone from the index and this replica has seen its record
unchanged for `observed_retention` seconds (on its own monotonic clock: not the agent's timestamps, which
may be skewed, nor its wall clock, which an NTP step or `date -s` moves; a new leader starts counting
afresh). Lease records of such VMs go too (the delete drops them, and a report after it is no longer stored:
domain/observed.py; a coordinator before that stored a RELEASE sent after it). Each delete is guarded by the
record's revision, so a record that changes meanwhile stays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from coordinator.etcd import keys
from coordinator.etcd.store import Store, Txn
from coordinator.settings import CoordinatorSettings

log = logging.getLogger(__name__)


class ObservedGC:
    def __init__(self, store: Store, settings: CoordinatorSettings, clock: Callable[[], float] = time.monotonic):
        self.store, self.settings, self.clock = store, settings, clock
        self.removed = 0
        self._orphans: dict[str, tuple[int, float]] = {}  # key -> (mod revision, first seen orphaned)

    async def run(self) -> None:
        while True:
            await self.sweep()
            await asyncio.sleep(min(self.settings.observed_retention / 2, 60))

    async def sweep(self) -> int:
        """Delete what is due; returns how many records went."""
        vm_prefix, lease_prefix = keys.observed("vm", ""), keys.observed("lease", "")
        snap, _ = await self.store.snapshot([keys.VM_INDEX, vm_prefix, lease_prefix])
        live = {e.key[len(keys.VM_INDEX):] for e in snap[keys.VM_INDEX]}
        orphans = [e for e in snap[vm_prefix] if e.key[len(vm_prefix):] not in live]
        orphans += [e for e in snap[lease_prefix] if _vm_of(e.value) not in live]
        now, seen = self.clock(), self._orphans
        self._orphans = {e.key: seen[e.key] if seen.get(e.key, (0,))[0] == e.mod_revision else (e.mod_revision, now)
                         for e in orphans}
        removed = 0
        for e in orphans:
            if now - self._orphans[e.key][1] < self.settings.observed_retention:
                continue
            if await self.store.commit(Txn().unchanged(e.key, e.mod_revision).delete(e.key)) is not None:
                removed += 1
                del self._orphans[e.key]
        if removed:
            log.info("forgot %d observed records of deleted VMs", removed)
        self.removed += removed
        return removed


def _vm_of(lease: object) -> object:
    """The VM a lease record (`lease/<nic uuid>`) belongs to."""
    return lease.get("vm_uuid") if isinstance(lease, dict) else None
