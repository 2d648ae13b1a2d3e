"""`VmReconciler`: the facade the agent talks to, and the order of its passes.

A pass compares the desired specs with what libvirt has (domains marked with our metadata) and hands
each VM to the converger; domains of ours absent from the desired state are destroyed and undefined.
Passes run under one lock: a full snapshot from the agent (`apply`; `full=True` on the agent's
periodic resync), the full resync after a libvirtd reconnect, and the enforcer task, which re-runs
single VMs that the observer found off their desired state or that failed and wait for their retry.
A VM waits for one retry at most (`retries.py`): a visit of it supersedes the retry, and asks for a new
one if it still needs one, so retries never pile up however often the VM is visited.
A removal that libvirt refused is retried the same way, promptly and with backoff: until the domain is
gone it stays in `domain_taps()`, which anti-spoofing keeps filtered (`kvmagent/components.py`).
One VM's change holds a pass for `PASS_HOLD` at most: past that it goes on alone (the pass goes on with
the other VMs, later passes leave that VM to it) and the VM is visited again once it has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any

from agentkit.model import L2Spec, L3Spec, VmSpec
from agentkit.proc import ProcessError
from agentkit.supervise import Supervisor
from kvmagent.domain_xml import NS, DomainMeta, domain_uuid
from kvmagent.errors import DriverError, KvmAgentError, NotListed, VolumeNotReady
from kvmagent.libvirt_driver import DomainInfo, LibvirtDriver
from kvmagent.vms import disks, install, paths
from kvmagent.vms.converge import BridgeHealth, Converger
from kvmagent.vms.ledger import Ledger
from kvmagent.vms.livemigrate import LiveMigrator
from kvmagent.vms.observe import Observer, Report
from kvmagent.vms.paths import Storages
from kvmagent.vms.power import Power
from kvmagent.vms.retries import Retries
from kvmagent.vms.serial import SerialLogs
from kvmagent.vms.settings import VmSettings

log = logging.getLogger(__name__)
# Seconds one VM's change may hold the host's pass: libvirt waits up to 30 s for a domain's job lock (one that
# a libvirtd killed mid-start leaves busy after its restart), a VM's disks or a volume its storage holds may
# take long, and every other VM's change would wait with it.
PASS_HOLD = 5.0


class VmReconciler:
    """Owns this host's VMs. Call `start()` once, then `apply(...)` on every desired-state change."""

    def __init__(self, driver: LibvirtDriver, bridges: BridgeHealth, settings: VmSettings, report: Report,
                 tasks: Supervisor | None = None, storages: Storages | None = None):
        self.driver = driver
        self.settings = settings
        self.ledger = Ledger()
        self._tasks = tasks or Supervisor()
        self._retries = Retries(self._kick)  # the one retry each VM waits for
        self.power = Power(driver, settings, self._tasks, self._retries.later)
        self.observer = Observer(driver, self.ledger, self.power, report, self._kick, self._rebooted)
        self.live = LiveMigrator(driver, self.ledger, self._tasks, self._retries.later, settings.retry_backoff_max,
                                 self.observer.mark)
        self.observer.sends = self.live.busy
        self.converger = Converger(driver, self.ledger, settings, self.power, bridges, self.observer.adoption_echo,
                                   storages, self.live.ensure, self._retries.later)
        self.serial = SerialLogs(settings.serial_log_dir, settings.serial_log_max_bytes,
                                 settings.serial_log_check_interval, lambda: {*self.ledger.meta, *self.ledger.desired})
        self._applied = False
        self._swept = False  # the serial logs of VMs this host no longer knows were removed after the start
        self._listed = False  # the host's domains were listed since this process started
        self._lock = asyncio.Lock()
        self._failures: dict[str, int] = {}
        self._held: set[str] = set()  # VMs whose desired item this agent cannot read: left as they are
        self._to_enforce: dict[str, None] = {}
        self._alone: dict[str, asyncio.Task[None]] = {}  # VM changes that outlasted PASS_HOLD, by VM uuid
        self._enforce_wake = asyncio.Event()

    async def start(self) -> None:
        """Subscribe to libvirt events and reconnects; start the observer and enforcer tasks."""
        self.driver.on_event(self.observer.on_event)
        self.driver.on_reconnect(self.resync)
        Path(self.settings.serial_log_dir).mkdir(parents=True, exist_ok=True)
        Path(self.settings.console_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        self._tasks.start(self.observer.run(), name="vm observer")
        self._tasks.start(self._enforce_loop(), name="vm enforcer")
        self._tasks.start(self.serial.run(), name="serial logs")
        async with self._lock:
            try:
                await self._list()
            except DriverError as e:  # lost again at once: the reconnect resync lists them
                log.warning("first domain listing failed: %s", e)

    def domain_taps(self) -> dict[str, tuple[str, ...]]:
        """The NIC taps of every domain of ours that exists, by VM uuid (as last listed or changed here).

        Raises NotListed until the domains were listed once: before that, a domain being deleted could be
        missing."""
        if not self._listed:
            raise NotListed("the host's domains are not listed yet (libvirtd not reached)")
        return {vm_uuid: meta.tap_names for vm_uuid, meta in self.ledger.meta.items()}

    async def close(self) -> None:
        self._retries.close()
        self.observer.close()
        await self._tasks.stop()

    async def apply(self, desired: Mapping[str, VmSpec], l2s: Mapping[str, L2Spec], l3s: Mapping[str, L3Spec],
                    configs: Mapping[str, object], full: bool = False, held: Iterable[str] = ()) -> None:
        """Make libvirt match the host's complete desired state (call with a full snapshot only); the
        domains of `held` VMs (`agentkit.model.Held`) are left as they are.

        Only VMs whose spec changed are visited, unless the networks or configs changed or `full`. With libvirtd
        away the state is kept for the reconnect's resync and the DriverError raised: the component fails until
        then, so /health and the host's health say so (they said ok while no VM could change)."""
        async with self._lock:
            led, self._held = self.ledger, set(held)
            new = {spec.uuid: disks.absolute(spec, self.settings.volume_dir) for spec in desired.values()}
            env_changed = (dict(l2s), dict(l3s), dict(configs)) != (led.l2s, led.l3s, led.configs)
            changed = set(new) if full or env_changed or not self._applied else {
                u for u, s in new.items() if led.desired.get(u) != s}
            led.desired, led.l2s, led.l3s, led.configs = new, dict(l2s), dict(l3s), dict(configs)
            self._applied = True
            # News of a move (it arrived there) is observed now, not after the listing below: libvirt holds a
            # migrating domain until the migration's job ended, seconds after the VM runs on the target.
            for vm_uuid in changed & {u for u, s in new.items() if s.migrate_to is not None}:
                self.observer.mark(vm_uuid)
            await self._sync(changed)

    async def resync(self) -> None:
        """Full pass over every VM (after a libvirtd restart: events missed meanwhile are lost). Before the
        first `apply`, the listing the start could not make: anti-spoofing waits for it, and the VMs'
        component (which would list them) waits for anti-spoofing."""
        async with self._lock:
            if self._applied:
                await self._sync(set(self.ledger.desired))
            elif not self._listed:
                await self._list()

    def storage_changed(self, refs: set[str]) -> None:
        """Volumes, images or storages changed (made, moved to a new file, mounted again): the VMs that use
        them converge again (one that waited for its volume starts now)."""
        for vm_uuid, spec in self.ledger.desired.items():
            if paths.references(spec) & refs:
                self._kick(vm_uuid)

    async def _sync(self, vms: set[str]) -> None:
        """The given VMs, then garbage: domains of ours nobody wants any more."""
        forgotten = self.observer.forget_destroyed()
        for vm_uuid in forgotten:
            for per_vm in (self.ledger.errors, self._failures):
                per_vm.pop(vm_uuid, None)
            self.power.forget(vm_uuid)
            self.live.forget(vm_uuid)
            self._retries.cancel(vm_uuid)
        ours = await self._list()
        # Gone without `_remove` ever running: left live (libvirt undefined its domain), or a live migration here
        # that failed (libvirt dropped the incoming domain; the VM, never reported, is its source's again).
        unreported = {u for u in self.ledger.meta if u not in self.ledger.desired and not self.observer.reported(u)}
        for vm_uuid in (set(forgotten) | unreported) - set(ours):
            self.ledger.meta.pop(vm_uuid, None)
            self.observer.forget(vm_uuid)
            self.serial.drop(vm_uuid)
        for vm_uuid in sorted(vms):
            await self._sync_one(self.ledger.desired[vm_uuid], ours.get(vm_uuid))
        for vm_uuid, info in ours.items():
            if vm_uuid not in self.ledger.desired and vm_uuid not in self._held:
                await self._remove(vm_uuid, info)
        if not self._swept:  # the host's VMs are known now
            self._swept = True
            await self.serial.sweep()

    async def _list(self) -> dict[str, DomainInfo]:
        """Our domains by VM uuid, their metadata recorded in the ledger."""
        ours: dict[str, DomainInfo] = {}
        for info in await self.driver.list_domains(NS):
            if info.meta:
                meta = DomainMeta.from_xml(info.meta)
                ours[meta.vm_uuid] = info
                self.ledger.meta[meta.vm_uuid] = meta
        self._listed = True
        return ours

    async def _change(self, vm_uuid: str, change: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run one VM's change, for PASS_HOLD at most: past that it goes on alone and the VM is visited again once
        it has ended (with its newest spec, against what libvirt has then). A VM whose change goes on alone is
        left to it."""
        if vm_uuid in self._alone:
            return
        changing = contextlib.ExitStack()  # the VM's events wait from now, not from when the task first runs
        changing.enter_context(self.observer.changing(vm_uuid))

        async def run() -> None:
            with changing:
                self._retries.cancel(vm_uuid)  # this visit is the retry; it asks for another if it needs one
                await change()

        task = self._tasks.start(run(), name=f"vm {vm_uuid}")
        done, _ = await asyncio.wait({task}, timeout=PASS_HOLD)
        if done:
            task.result()  # a bug ends the pass here too, not only the process a second later
        else:
            log.warning("vm %s: its change takes over %g s; it goes on alone, the host's other VMs do not wait",
                        vm_uuid, PASS_HOLD)
            self._alone[vm_uuid] = task
            task.add_done_callback(lambda _: self._rejoin(vm_uuid))

    def _rejoin(self, vm_uuid: str) -> None:
        del self._alone[vm_uuid]
        self._kick(vm_uuid)

    async def _sync_one(self, spec: VmSpec, info: DomainInfo | None) -> None:
        await self._change(spec.uuid, lambda: self._converge(spec, info))

    async def _converge(self, spec: VmSpec, info: DomainInfo | None) -> None:
        """Converge one VM; an expected failure is kept for its report and retried with backoff."""
        try:
            await self.converger.converge(spec, info)
            self.ledger.errors.pop(spec.uuid, None)
            self._failures.pop(spec.uuid, None)
        except (KvmAgentError, ProcessError) as e:
            failures = self._failures[spec.uuid] = self._failures.get(spec.uuid, 0) + 1
            delay = min(2.0 ** failures, self.settings.retry_backoff_max)
            # waiting for its volume (an image being fetched) is no error of the VM's: the storage logs its own
            log.log(logging.INFO if isinstance(e, VolumeNotReady) else logging.ERROR, "vm %s: %s (retry in %.0fs)",
                    spec.uuid, e, delay)
            self.ledger.errors[spec.uuid] = str(e)
            self._retries.later(spec.uuid, delay)

    async def _remove(self, vm_uuid: str, info: DomainInfo) -> None:
        await self._change(vm_uuid, lambda: self._destroy(vm_uuid, info))

    async def _destroy(self, vm_uuid: str, info: DomainInfo) -> None:
        """Remove a domain nobody wants; when libvirt fails, try again soon (it stays filtered meanwhile)."""
        try:
            await self.converger.remove(vm_uuid, info)
            self._failures.pop(vm_uuid, None)
            self.serial.drop(vm_uuid)
        except DriverError as e:
            failures = self._failures[vm_uuid] = self._failures.get(vm_uuid, 0) + 1
            delay = min(0.25 * 2.0 ** failures, self.settings.retry_backoff_max)
            log.error("vm %s: removal failed: %s (retry in %.1fs)", vm_uuid, e, delay)
            self._retries.later(vm_uuid, delay)

    def _kick(self, vm_uuid: str) -> None:
        self._to_enforce[vm_uuid] = None
        self._enforce_wake.set()

    async def _enforce_loop(self) -> None:
        while True:
            await self._enforce_wake.wait()
            self._enforce_wake.clear()
            batch, self._to_enforce = list(self._to_enforce), {}
            async with self._lock:
                for vm_uuid in batch:
                    await self._enforce(vm_uuid)

    async def _enforce(self, vm_uuid: str) -> None:
        """One VM again: converge it when desired, else remove its domain if it is still there (not while a
        change of it goes on alone: it is visited again when that ends)."""
        if vm_uuid in self._alone:
            return
        spec = self.ledger.desired.get(vm_uuid)
        try:
            info = await self.driver.domain_info(domain_uuid(vm_uuid), NS)
        except DriverError as e:  # libvirtd away: the reconnect resync takes over
            log.warning("vm %s: %s", vm_uuid, e)
            return
        if info is not None and info.meta:
            self.ledger.meta[vm_uuid] = DomainMeta.from_xml(info.meta)
        if spec is not None:
            await self._sync_one(spec, info)
        elif info is not None and info.meta:
            await self._remove(vm_uuid, info)

    def _rebooted(self, vm_uuid: str) -> None:
        meta = self.ledger.meta.get(vm_uuid)
        if meta is not None and meta.install == "pending":
            self._tasks.start(self._install_switch(vm_uuid), name=f"install switch {vm_uuid}")

    async def _install_switch(self, vm_uuid: str) -> None:
        """First reboot of an ISO-installed VM, once no change of the VM goes on alone: the switch to HardDisk
        first is kept in the domain, then the VM converges like any other (install.py), retried the same way."""
        while True:
            async with self._lock:
                alone = self._alone.get(vm_uuid)
                if alone is None:
                    spec, meta = self.ledger.desired.get(vm_uuid), self.ledger.meta.get(vm_uuid)
                    switching = install.switching(meta, spec) if spec is not None and meta is not None else None
                    if switching is None:
                        return
                    try:
                        await self.converger.remember(switching)
                    except DriverError as e:  # libvirtd away: the guest boots its ISO again, and reboots again
                        log.error("vm %s: cannot record the install's reboot: %s", vm_uuid, e)
                        return
                    await self._enforce(vm_uuid)
                    return
            await asyncio.wait({alone})
