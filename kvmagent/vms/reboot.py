"""Reboots the API asks for, level-triggered: the spec's `reboot_seq` against the one the domain applied.

The API bumps a VM's `reboot_seq`; the domain's metadata keeps the last sequence applied
(`DomainMeta.reboot_seq`), so each request is applied once, across agent restarts: the converger
records the new sequence first, then `Reboots` powers the guest off (ACPI power button, repeated;
forced off after `stop_timeout`) and starts it again. A fresh qemu boots what the definition says now
(a new boot order, cache or console mode), as ZStack's RebootVm does; a reboot from inside the guest
keeps the running qemu. While a VM reboots it is neither observed nor enforced (its passing stop is
no drift); once it runs again the enforcer converges it, which observes and reports it.

The sequence is recorded with the enforced intent forgotten, so an agent that dies while the guest is
off starts it again when it comes back (the stop is not taken for drift). A lost request (the agent died
between recording and powering off) is the price of never rebooting twice for one request. A domain
with no sequence recorded (defined before reboots were applied) takes the spec's as applied: an
upgrade reboots nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agentkit.model import VmSpec
from agentkit.supervise import Supervisor
from kvmagent.domain_xml import DomainMeta
from kvmagent.errors import DriverError, NoDomain
from kvmagent.libvirt_driver import LibvirtDriver

log = logging.getLogger(__name__)
RETRY = 2.0  # seconds before the enforcer looks again at a VM whose reboot failed


def due(spec: VmSpec, meta: DomainMeta) -> bool:
    """Did the API ask for a reboot this domain has not applied yet?"""
    return meta.reboot_seq is not None and spec.reboot_seq > meta.reboot_seq


class Reboots:
    """Reboots in progress, one background task per VM (a guest's reboot never holds up the others);
    `kick_later(vm, delay)` hands the VM back to the enforcer."""

    def __init__(self, driver: LibvirtDriver, timeout: float, tasks: Supervisor,
                 kick_later: Callable[[str, float], None]):
        self.driver = driver
        self.timeout = timeout
        self._tasks = tasks
        self._kick_later = kick_later
        self._active: dict[str, object] = {}  # VMs rebooting -> the token of their reboot

    def active(self, vm_uuid: str) -> bool:
        return vm_uuid in self._active

    def start(self, vm_uuid: str, luuid: str) -> None:
        token = self._active[vm_uuid] = object()
        self._tasks.start(self._reboot(vm_uuid, luuid, token), name=f"reboot {vm_uuid}")

    def cancel(self, vm_uuid: str) -> None:
        """A stop or removal overtakes the reboot: the guest is not started again."""
        self._active.pop(vm_uuid, None)

    async def _reboot(self, vm_uuid: str, luuid: str, token: object) -> None:
        log.info("vm %s: reboot: shutdown requested (forced after %.0fs)", vm_uuid, self.timeout)
        delay = 0.0
        try:
            if not await self.driver.stop(luuid, self.timeout):
                log.info("vm %s: reboot: graceful shutdown timed out; destroyed", vm_uuid)
            if self._active.get(vm_uuid) is token:
                await self.driver.start(luuid)
                log.info("vm %s: rebooted", vm_uuid)
        except NoDomain:
            pass
        except DriverError as e:
            log.error("vm %s: reboot failed: %s", vm_uuid, e)
            delay = RETRY
        finally:
            if self._active.get(vm_uuid) is token:
                del self._active[vm_uuid]
                self._kick_later(vm_uuid, delay)
