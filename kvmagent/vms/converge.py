"""One VM's domain brought to its spec: disks, definition, live devices, then power.

The domain is (re)defined only when its rendered XML's fingerprint differs from the one kept in its
metadata (or the metadata itself changed), so a restarted agent writes nothing. A running domain
gets cdrom media, data volume and NIC changes live, and the reboots the API asks for (`reboot.py`);
everything else applies at its next cold start.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from agentkit.model import CacheMode, VmSpec, VmState
from kvmagent.domain_xml import (
    NS,
    NS_PREFIX,
    DomainContext,
    DomainMeta,
    Modes,
    NicNet,
    domain_uuid,
    render,
    resolve_modes,
)
from kvmagent.errors import BridgeError, NoDomain, SpecError
from kvmagent.libvirt_driver import DomainInfo, LibvirtDriver, detect_domain_type
from kvmagent.vms import disks, install, nics, paths, reboot
from kvmagent.vms.ledger import Ledger
from kvmagent.vms.paths import NoStorages, Storages
from kvmagent.vms.power import ALIVE, Power, intent_known
from kvmagent.vms.settings import VmSettings

log = logging.getLogger(__name__)
UNPLUG_RECHECK = 5.0  # seconds before a pass looks again at devices whose live unplug was asked for


class BridgeHealth(Protocol):
    """What the VMs need to know of the bridges component: the L2s whose bridge failed."""

    @property
    def failed(self) -> Mapping[str, BridgeError]: ...


class Converger:
    def __init__(self, driver: LibvirtDriver, ledger: Ledger, settings: VmSettings, power: Power,
                 bridges: BridgeHealth, adoption_echo: Callable[[VmSpec], bool], storages: Storages | None = None,
                 migrate: Callable[[VmSpec], None] = lambda spec: None,
                 kick_later: Callable[[str, float], None] = lambda vm, delay: None):
        self.driver = driver
        self.kick_later = kick_later
        self.migrate = migrate
        self.storages: Storages = storages or NoStorages()
        self.ledger = ledger
        self.settings = settings
        self.power = power
        self.bridges = bridges
        self._adoption_echo = adoption_echo
        self.domain_type = detect_domain_type(settings.domain_type)

    @contextlib.asynccontextmanager
    async def realized(self, spec: VmSpec) -> AsyncIterator[VmSpec]:
        """`spec` with its disks' and ISO's paths on this host (raw files made when missing); the storage
        does not change the VM's volumes until the block ends (the domain is defined or started)."""
        raw = paths.on_storage(spec, self.storages)
        roots = [*self.settings.file_roots, *paths.roots(raw, self.storages)]
        disks.check_confined(raw, self.settings.volume_dir, roots)
        async with self.storages.holding(paths.storage_volumes(spec)):
            await disks.ensure(raw)
            yield paths.resolved(raw, self.storages)

    async def converge(self, spec: VmSpec, info: DomainInfo | None) -> None:
        """Make the domain of `spec` match it; `info` is libvirt's view of it (None: not defined). A VM
        moving live is left alone: the source sends its running domain (`migrate`), never starts it again;
        the target waits for it to arrive and become its own."""
        if spec.incoming is not None:
            return
        if spec.migrate_to is not None:
            if info is not None and info.state in ALIVE:
                self.migrate(spec)
            return
        self._check_bridges(spec)
        async with self.realized(spec) as real:
            await self._converge(real, info)

    async def _converge(self, spec: VmSpec, info: DomainInfo | None) -> None:
        luuid = domain_uuid(spec.uuid)
        if info is None:
            await self.define(spec, install.first_meta(spec))
            state = VmState.STOPPED
        else:
            recorded = self.ledger.meta[spec.uuid]
            meta = install.current(recorded, spec).with_taps(spec)
            state = info.state
            if meta.install == "switching":
                state, meta = await self._switch_install(spec, state, meta)
            if state in ALIVE:
                live = await self.driver.xml(luuid)
                disk_plug = disks.plan_hotplug(spec, live, self._cache(spec))
                nic_plug = nics.plan(spec, live, self.nets(spec))
                await disks.hotplug(self.driver, luuid, spec.uuid, disk_plug)
                await nics.hotplug(self.driver, luuid, spec.uuid, nic_plug)
                if disk_plug.detach or nic_plug.detach:  # a guest may miss the request: look, and ask, again
                    self.kick_later(spec.uuid, UNPLUG_RECHECK)
            if render(spec, self.context(spec, meta), meta).fingerprint != meta.fingerprint or meta != recorded:
                await self.define(spec, meta)
        if self._adoption_echo(spec) and not intent_known(spec, self.ledger.meta.get(spec.uuid)):
            await self.record_intent(spec)  # met when the agent reported it: not a new intent to enforce
        await self.power.enforce(spec, luuid, state, self.ledger.meta.get(spec.uuid),
                                 lambda: self.record_intent(spec))
        await self._reboot(spec, luuid, state)

    def _check_bridges(self, spec: VmSpec) -> None:
        for nic in spec.nics:
            l3 = self.ledger.l3s.get(nic.l3_uuid)
            if l3 is not None and l3.l2_uuid in self.bridges.failed:
                raise self.bridges.failed[l3.l2_uuid]

    def _cache(self, spec: VmSpec) -> CacheMode:
        return resolve_modes(spec, self.ledger.configs, Modes(cache=self.settings.cache_mode)).cache

    async def define(self, spec: VmSpec, meta: DomainMeta) -> None:
        """Define the domain of `spec`; its metadata records its taps, whatever `meta` said."""
        meta = meta.with_taps(spec)
        rendered = render(spec, self.context(spec, meta), meta)
        await self.driver.define(rendered.xml)
        self.ledger.meta[spec.uuid] = replace(meta, fingerprint=rendered.fingerprint)
        log.info("vm %s defined (fingerprint %s)", spec.uuid, rendered.fingerprint)

    def nets(self, spec: VmSpec) -> dict[str, NicNet]:
        """Where each NIC plugs (its L2's bridge) and its MTU, by NIC uuid."""
        nets = {}
        for nic in spec.nics:
            l3 = self.ledger.l3s.get(nic.l3_uuid)
            l2 = self.ledger.l2s.get(l3.l2_uuid) if l3 else None
            if l3 is None or l2 is None:
                raise SpecError(f"nic {nic.uuid}: l3 {nic.l3_uuid} or its l2 is not in this host's state")
            nets[nic.uuid] = NicNet(l2.bridge, l3.mtu)
        return nets

    def context(self, spec: VmSpec, meta: DomainMeta) -> DomainContext:
        """Everything besides the spec that shapes the domain: bridges, modes, paths, boot order."""
        s = self.settings
        return DomainContext(
            domain_type=self.domain_type,
            modes=resolve_modes(spec, self.ledger.configs, Modes(s.cpu_mode, s.cache_mode, s.console_mode)),
            nets=self.nets(spec),
            serial_log=str(Path(s.serial_log_dir) / f"{spec.uuid}.log"),
            boot_order=install.effective_boot_order(spec, meta),
            console_dir=s.console_dir,
            asset_tag=s.smbios_asset_tag,
        )

    async def record_intent(self, spec: VmSpec) -> None:
        """Remember in the domain that this generation's desired state was enforced or met."""
        await self._remember(spec, intent=spec.state, intent_generation=spec.generation)

    async def _reboot(self, spec: VmSpec, luuid: str, state: VmState) -> None:
        """The reboot the API asked for, once (`reboot.py`): recorded, then a running guest is powered off
        and started again (one starting now boots anyway)."""
        meta = self.ledger.meta[spec.uuid]
        if meta.reboot_seq == spec.reboot_seq:
            return
        if not (reboot.due(spec, meta) and state is VmState.RUNNING and spec.state == "Running"):
            await self._remember(spec, reboot_seq=spec.reboot_seq)
            return
        # the enforced intent is forgotten too: an agent that dies while the guest is off starts it again
        # (its stop is no drift to adopt)
        await self._remember(spec, reboot_seq=spec.reboot_seq, intent="", intent_generation=None)
        self.power.reboots.start(spec.uuid, luuid)

    async def _remember(self, spec: VmSpec, **changes: Any) -> None:
        await self.remember(replace(self.ledger.meta[spec.uuid], **changes))

    async def remember(self, meta: DomainMeta) -> None:
        """Keep `meta` in the domain (its running qemu's and its definition) and in the ledger."""
        await self.driver.set_metadata(domain_uuid(meta.vm_uuid), meta.to_xml(), NS_PREFIX, NS)
        self.ledger.meta[meta.vm_uuid] = meta

    async def _switch_install(self, spec: VmSpec, state: VmState, meta: DomainMeta) -> tuple[VmState, DomainMeta]:
        """An ISO install rebooted (install.py): its qemu, still booting the ISO first, is stopped; the
        pass then defines the new order and starts a fresh qemu (its intent was forgotten with the switch)."""
        if state in ALIVE:
            await self.driver.destroy(domain_uuid(spec.uuid))
        log.info("vm %s: ISO install rebooted; it boots %s from now on", spec.uuid,
                 install.order_str(install.effective_boot_order(spec, meta)))
        return VmState.STOPPED, replace(meta, install="done")

    async def remove(self, vm_uuid: str, info: DomainInfo) -> None:
        """Destroy and undefine a domain of ours nobody wants any more. Raises DriverError when libvirt
        failed: the domain is then still ours (its taps stay filtered) and the caller retries."""
        self.power.reboots.cancel(vm_uuid)
        try:
            await self.driver.destroy(info.uuid)
            await self.driver.undefine(info.uuid)
            log.info("vm %s destroyed and undefined (not desired any more)", vm_uuid)
        except NoDomain:
            pass
        self.ledger.meta.pop(vm_uuid, None)
