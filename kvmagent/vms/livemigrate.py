"""The source side of a live migration: the running domain sent to the target host's libvirtd.

A VM whose spec carries `migrate_to` is not converged here any more: once the target prepared for it
(`migrate_to.ready`: the coordinator says so, and a new spec brings it here) its domain is handed to
libvirt's peer-to-peer migration in the background (it may take a while; the VM's other work waits for
none of it). A migration libvirt refuses is kept as the VM's error and tried again with backoff; the domain
keeps running here meanwhile. Once it is gone (undefined here when it runs there) the observer reports
it `migrated` and nothing here defines or starts it again, even after a restart of the agent. A move called
off (`migrate_to.abort`) is tried no more, and a send libvirt runs of it (this agent's, or one begun before
a restart) is aborted; once none runs the observer reports the VM `kept` (observe.py). A domain that stopped here
before it was sent (its guest powered off) is sent no more (only a running one is), and reported `kept` too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from agentkit.model import VmSpec
from agentkit.supervise import Supervisor
from kvmagent.domain_xml import domain_uuid
from kvmagent.errors import DriverError, NoDomain
from kvmagent.libvirt_driver import LibvirtDriver
from kvmagent.vms.ledger import Ledger

log = logging.getLogger(__name__)
ABORT_POLL = 1.0  # seconds between looks at a send being aborted (libvirt refuses an abort in some phases)


class LiveMigrator:
    def __init__(self, driver: LibvirtDriver, ledger: Ledger, tasks: Supervisor,
                 retry: Callable[[str, float], None], backoff_max: float, settled: Callable[[str], None]):
        self.driver, self.ledger, self._tasks, self._retry = driver, ledger, tasks, retry
        self.backoff_max = backoff_max
        self._settled = settled  # a send or its abort ended: the VM is observed now
        self._running: set[str] = set()
        self._aborting: set[str] = set()
        self._called_off: set[str] = set()  # VMs whose move is called off: a send that fails is not tried again
        self._failures: dict[str, int] = {}

    def ensure(self, spec: VmSpec) -> None:
        """Send the VM's running domain to `spec.migrate_to` once the target prepared for it, unless a
        migration of it already runs; a move called off is tried no more and its send aborted."""
        move = spec.migrate_to
        if move is None or not move.ready:
            return
        if move.abort:
            self._call_off(spec.uuid)
            return
        self._called_off.discard(spec.uuid)
        if spec.uuid in self._running:
            return
        self._running.add(spec.uuid)
        self._tasks.start(self._migrate(spec), name=f"migrate vm {spec.uuid}")

    def busy(self, vm_uuid: str) -> bool:
        """Is a send of the VM, or its abort, under way here?"""
        return vm_uuid in self._running or vm_uuid in self._aborting

    def forget(self, vm_uuid: str) -> None:
        """The VM is gone: its failed tries no longer count (a failure is only cleared by a success)."""
        self._failures.pop(vm_uuid, None)
        self._called_off.discard(vm_uuid)

    def _call_off(self, vm_uuid: str) -> None:
        self._called_off.add(vm_uuid)
        self._failures.pop(vm_uuid, None)
        self.ledger.errors.pop(vm_uuid, None)  # the failed tries' error: they are over
        if vm_uuid not in self._aborting:
            self._aborting.add(vm_uuid)
            self._tasks.start(self._abort(vm_uuid), name=f"abort migration of vm {vm_uuid}")

    async def _abort(self, vm_uuid: str) -> None:
        """Abort the send libvirt runs, until none runs (it may refuse in a phase; the send ends anyway)."""
        luuid, refused = domain_uuid(vm_uuid), False
        try:
            while await self.driver.sending(luuid):
                try:
                    await self.driver.abort_migration(luuid)
                except NoDomain:
                    break  # it left: the send completed first
                except DriverError as e:
                    if not refused:
                        log.warning("vm %s: live migration not aborted yet (again every %.0fs until it ends): %s",
                                    vm_uuid, ABORT_POLL, e)
                    refused = True
                await asyncio.sleep(ABORT_POLL)
        except NoDomain:
            pass  # it left: the send completed first
        except DriverError as e:  # libvirtd away: its reconnect's resync calls the move off again
            log.warning("vm %s: cannot abort its live migration: %s", vm_uuid, e)
        finally:
            self._aborting.discard(vm_uuid)
            self._settled(vm_uuid)

    async def _migrate(self, spec: VmSpec) -> None:
        move = spec.migrate_to
        assert move is not None
        try:
            log.info("vm %s: live migration %s to host %s (%s) begins", spec.uuid, move.id, move.host, move.uri)
            await self.driver.migrate(domain_uuid(spec.uuid), move.uri, f"tcp://{move.address}")
            log.info("vm %s: live migration %s done", spec.uuid, move.id)
            self._failures.pop(spec.uuid, None)
            self.ledger.errors.pop(spec.uuid, None)
        except DriverError as e:
            if spec.uuid in self._called_off:
                log.info("vm %s: live migration %s called off: %s", spec.uuid, move.id, e)
                return
            failures = self._failures[spec.uuid] = self._failures.get(spec.uuid, 0) + 1
            delay = min(2.0 ** failures, self.backoff_max)
            self.ledger.errors[spec.uuid] = f"live migration to host {move.host} failed: {e}"
            log.error("vm %s: live migration %s failed (retry in %.0fs): %s", spec.uuid, move.id, delay, e)
            self._retry(spec.uuid, delay)
        finally:
            self._running.discard(spec.uuid)
            self._settled(spec.uuid)
