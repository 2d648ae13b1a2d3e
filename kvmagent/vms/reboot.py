"""Reboots the API asks for, level-triggered: the spec's `reboot_seq` against the one the domain applied.

The API bumps a VM's `reboot_seq`; the domain's metadata keeps the last sequence applied
(`DomainMeta.reboot_seq`), so each request is applied once, across agent restarts: the converger
records the new sequence first, then `Reboots` asks the guest (ACPI power button; libvirt restarts a
guest that powers off on it) and resets the domain when no reboot was seen within `stop_timeout`
(a guest that ignores the button, or hangs). A lost request (the agent died between recording and
asking) is the price of never rebooting twice for one request. A domain with no sequence recorded
(defined before reboots were applied) takes the spec's as applied: an upgrade reboots nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agentkit.model import VmSpec
from agentkit.supervise import Supervisor
from kvmagent.domain_xml import DomainMeta
from kvmagent.errors import DriverError, NoDomain
from kvmagent.libvirt_driver import LibvirtDriver

log = logging.getLogger(__name__)


def due(spec: VmSpec, meta: DomainMeta) -> bool:
    """Did the API ask for a reboot this domain has not applied yet?"""
    return meta.reboot_seq is not None and spec.reboot_seq > meta.reboot_seq


class Reboots:
    """Reboots in progress, one background task per VM (a guest's reboot never holds up the others)."""

    def __init__(self, driver: LibvirtDriver, timeout: float, tasks: Supervisor):
        self.driver = driver
        self.timeout = timeout
        self._tasks = tasks
        self._seen: dict[str, asyncio.Event] = {}  # VMs being rebooted -> set once the guest rebooted

    def start(self, vm_uuid: str, luuid: str) -> None:
        self.cancel(vm_uuid)
        self._seen[vm_uuid] = asyncio.Event()
        self._tasks.start(self._reboot(vm_uuid, luuid, self._seen[vm_uuid]), name=f"reboot {vm_uuid}")

    def rebooted(self, vm_uuid: str) -> None:
        """libvirt saw the guest reset (its reboot event)."""
        if seen := self._seen.get(vm_uuid):
            seen.set()

    def cancel(self, vm_uuid: str) -> None:
        """A stop or removal overtakes the reboot: no forced reset afterwards."""
        if seen := self._seen.pop(vm_uuid, None):
            seen.set()

    async def _reboot(self, vm_uuid: str, luuid: str, seen: asyncio.Event) -> None:
        log.info("vm %s: reboot requested (forced after %.0fs)", vm_uuid, self.timeout)
        try:
            try:
                await self.driver.reboot(luuid)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(seen.wait(), self.timeout)
            except NoDomain:
                raise
            except DriverError as e:  # libvirt refused the graceful way: reset at once
                log.warning("vm %s: graceful reboot refused: %s", vm_uuid, e)
            if not seen.is_set():
                log.info("vm %s: the guest did not reboot; reset", vm_uuid)
                await self.driver.reset(luuid)
        except NoDomain:
            pass
        except DriverError as e:
            log.error("vm %s: reboot failed: %s", vm_uuid, e)
        finally:
            if self._seen.get(vm_uuid) is seen:
                del self._seen[vm_uuid]
