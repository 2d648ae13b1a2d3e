"""The source side of a live migration: the running domain sent to the target host's libvirtd.

A VM whose spec carries `migrate_to` is not converged here any more: once the target prepared for it
(`migrate_to.ready`: the coordinator says so, and a new spec brings it here) its domain is handed to
libvirt's peer-to-peer migration in the background (it may take a while; the VM's other work waits for
none of it). A migration libvirt refuses is kept as the VM's error and tried again with backoff; the domain
keeps running here meanwhile. Once it is gone (undefined here when it runs there) the observer reports
it `migrated` and nothing here defines or starts it again, even after a restart of the agent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agentkit.model import VmSpec
from agentkit.supervise import Supervisor
from kvmagent.domain_xml import domain_uuid
from kvmagent.errors import DriverError
from kvmagent.libvirt_driver import LibvirtDriver
from kvmagent.vms.ledger import Ledger

log = logging.getLogger(__name__)


class LiveMigrator:
    def __init__(self, driver: LibvirtDriver, ledger: Ledger, tasks: Supervisor,
                 retry: Callable[[str, float], None], backoff_max: float):
        self.driver, self.ledger, self._tasks, self._retry = driver, ledger, tasks, retry
        self.backoff_max = backoff_max
        self._running: set[str] = set()
        self._failures: dict[str, int] = {}

    def ensure(self, spec: VmSpec) -> None:
        """Send the VM's running domain to `spec.migrate_to` once the target prepared for it, unless a
        migration of it already runs."""
        if spec.migrate_to is None or not spec.migrate_to.ready or spec.uuid in self._running:
            return
        self._running.add(spec.uuid)
        self._tasks.start(self._migrate(spec), name=f"migrate vm {spec.uuid}")

    def forget(self, vm_uuid: str) -> None:
        """The VM is gone: its failed tries no longer count (a failure is only cleared by a success)."""
        self._failures.pop(vm_uuid, None)

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
            failures = self._failures[spec.uuid] = self._failures.get(spec.uuid, 0) + 1
            delay = min(2.0 ** failures, self.backoff_max)
            self.ledger.errors[spec.uuid] = f"live migration to host {move.host} failed: {e}"
            log.error("vm %s: live migration %s failed (retry in %.0fs): %s", spec.uuid, move.id, delay, e)
            self._retry(spec.uuid, delay)
        finally:
            self._running.discard(spec.uuid)
