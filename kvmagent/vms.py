"""The VM reconciler: desired `VmSpec`s in, libvirt domains out, observed VM state reported back.

Level-triggered: every pass compares the desired specs with what libvirt has (domains marked
with our metadata; foreign domains are never touched) and defines, starts, pauses, resumes,
stops, attaches, detaches, destroys and undefines until they agree. Domains of ours that are absent from the
desired state are destroyed and undefined (so a VM deleted while the agent was down goes away
when it returns).

Observed state: libvirt lifecycle events (ours and out-of-band: `virsh destroy`, guest poweroff,
`virsh start`) mark the VM dirty; one observer task reads its state (and console address from
the live XML) and calls `report(kind="vm", id=<vm uuid>, body=...)` when the body changed, in
event order. A periodic full pass and the resync after a libvirtd reconnect back events up.

Drift (observed state - Running, Paused or Stopped - differs from desired although the agent
already enforced this desired state):
`drift_policy="restart"` enforces the desired state again (restarts back off up to
`restart_backoff_max`); `"adopt"` leaves the VM as the user left it and reports `drift: true`
with the spec generation it drifted from; the coordinator writes the adopted state into a new
generation (coordinator/vms.py `adopt`), which this agent then finds already fulfilled.

ISO install: a VM defined with a cdrom and `CdRom` first boots the ISO; at the guest's first
reboot the agent switches it to `HardDisk` first (reported as `boot_order`) until the spec's
boot order changes. Attaching an ISO later never changes the boot order.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from agentkit.model import (
    BootDevice,
    CacheMode,
    ConsoleMode,
    CpuMode,
    FileDisk,
    L2Spec,
    L3Spec,
    VmSpec,
    VmState,
)
from agentkit.proc import ProcessError, arun
from kvmagent.bridges import BridgeError, Bridges
from kvmagent.domain_xml import (
    CDROM_ALIAS,
    NS,
    NS_PREFIX,
    VOL_ALIAS,
    DomainContext,
    DomainMeta,
    Modes,
    NicNet,
    disk_element,
    domain_uuid,
    render,
    resolve_modes,
    target_name,
    with_cdrom_source,
)
from kvmagent.libvirt_driver import (
    ConsoleAddress,
    DomainEvent,
    DomainInfo,
    DriverError,
    LibvirtDriver,
    NoDomain,
    console_from_xml,
    detect_domain_type,
)

log = logging.getLogger(__name__)
Report = Callable[[str, str, dict], Awaitable[None] | None]  # (kind, id, body)
ALIVE = (VmState.RUNNING, VmState.PAUSED)


class VmSettings(BaseModel):
    """The reconciler's settings (a section of kvmagent's config; defaults suit a production host)."""

    drift_policy: Literal["restart", "adopt"] = "restart"
    domain_type: Literal["auto", "kvm", "qemu"] = "auto"
    cpu_mode: CpuMode = "none"
    cache_mode: CacheMode = "none"
    console_mode: ConsoleMode = "vnc"
    console_listen: str = "0.0.0.0"
    host_address: str | None = None  # console host reported when console_listen is a wildcard
    serial_log_dir: str = "/var/log/hoststack/vm"
    volume_dir: str = "/var/lib/hoststack/volumes"  # base of relative qcow2 paths
    stop_timeout: float = 60.0
    sync_interval: float = 60.0
    restart_backoff_max: float = 60.0
    smbios_asset_tag: str = "hoststack.zstack.io"


class SpecError(Exception):
    """The spec cannot be realized on this host (e.g. a NIC's L3/L2 is not in the host stream)."""


def effective_boot_order(spec: VmSpec, meta: DomainMeta) -> list[BootDevice]:
    """The spec's boot order, or HardDisk first once an ISO install rebooted (until the spec changes)."""
    order = list(spec.boot_order)
    if meta.install == "done" and meta.install_order == _order_str(order):
        return [BootDevice.HARDDISK] + [d for d in order if d is not BootDevice.HARDDISK]
    return order


def _kind(state: VmState) -> str:
    """An observed state in the vocabulary of `VmSpec.state` (crashed or unknown counts as stopped)."""
    return state.value if state in (VmState.RUNNING, VmState.PAUSED) else "Stopped"


def _order_str(order: list[BootDevice]) -> str:
    return ",".join(d.value for d in order)


class VmReconciler:
    """Owns this host's VMs. Call `start()` once, then `apply(...)` on every desired-state change."""

    def __init__(self, driver: LibvirtDriver, bridges: Bridges, settings: VmSettings, report: Report):
        self.driver = driver
        self.bridges = bridges
        self.settings = settings
        self._report = report
        self.domain_type = detect_domain_type(settings.domain_type)
        self._desired: dict[str, VmSpec] = {}
        self._l2s: dict[str, L2Spec] = {}
        self._l3s: dict[str, L3Spec] = {}
        self._configs: dict[str, object] = {}
        self._applied = False
        self._lock = asyncio.Lock()
        self._meta: dict[str, DomainMeta] = {}
        self._errors: dict[str, str] = {}
        self._stoppers: dict[str, asyncio.Task] = {}  # graceful stops in progress
        self._restarts: dict[str, tuple[int, float]] = {}
        self._failures: dict[str, int] = {}
        self._reported: dict[str, dict] = {}
        self._busy: set[str] = set()  # VMs being changed: observed (and reported) once settled
        self._consoles: dict[str, tuple[int, dict | None]] = {}  # vm -> (domain id, console) last seen
        self._dirty: dict[str, None] = {}
        self._to_enforce: dict[str, None] = {}
        self._observe_wake = asyncio.Event()
        self._enforce_wake = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Subscribe to libvirt events and start the observer, enforcer and periodic sync tasks."""
        self.driver.on_event(self._on_event)
        self.driver.on_reconnect(self.resync)
        Path(self.settings.serial_log_dir).mkdir(parents=True, exist_ok=True)
        for coro in (self._observe_loop(), self._enforce_loop(), self._periodic_loop()):
            self._spawn(coro)

    async def close(self) -> None:
        for t in [*self._tasks, *self._stoppers.values()]:
            t.cancel()
        for t in [*self._tasks, *self._stoppers.values()]:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def _spawn(self, coro: Awaitable) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- public API -------------------------------------------------------------------------------
    async def apply(self, desired: Mapping[str, VmSpec], l2s: Mapping[str, L2Spec],
                    l3s: Mapping[str, L3Spec], configs: Mapping[str, object]) -> None:
        """Make libvirt match the host's complete desired state (call with a full snapshot only)."""
        async with self._lock:
            new = {spec.uuid: self._absolute(spec) for spec in desired.values()}
            env_changed = (dict(l2s), dict(l3s), dict(configs)) != (self._l2s, self._l3s, self._configs)
            changed = set(new) if env_changed or not self._applied else {
                u for u, s in new.items() if self._desired.get(u) != s}
            self._desired, self._l2s, self._l3s = new, dict(l2s), dict(l3s)
            self._configs, self._applied = dict(configs), True
            try:
                await self._sync(changed)
            except DriverError as e:  # libvirtd away: the reconnect resync applies this state
                log.warning("apply deferred: %s", e)

    def _absolute(self, spec: VmSpec) -> VmSpec:
        """Relative qcow2 (and backing) paths live under `volume_dir`."""
        base = Path(self.settings.volume_dir)
        vols = []
        for vol in spec.volumes:
            d = vol.disk
            if isinstance(d, FileDisk):
                backing = str(base / d.backing) if d.backing else None
                d = d.model_copy(update={"path": str(base / d.path), "backing": backing})
            vols.append(vol.model_copy(update={"disk": d}))
        return spec.model_copy(update={"volumes": vols})

    async def resync(self) -> None:
        """Full pass over every VM (periodic, and after a libvirtd restart)."""
        async with self._lock:
            if self._applied:
                await self._sync(set(self._desired))

    async def reboot(self, vm_uuid: str, force: bool = False) -> None:
        """Reboot through ACPI (the guest must handle it) or, with `force`, a hard reset."""
        luuid = domain_uuid(vm_uuid)
        await (self.driver.reset(luuid) if force else self.driver.reboot(luuid))

    async def console(self, vm_uuid: str) -> ConsoleAddress | None:
        return await self.driver.console(domain_uuid(vm_uuid), self.settings.host_address)

    def snapshot(self) -> dict[str, dict]:
        """Last reported body per VM (what `/v1/state` can show)."""
        return {k: dict(v) for k, v in self._reported.items()}

    # -- full / partial passes ----------------------------------------------------------------------
    async def _sync(self, vms: set[str]) -> None:
        """Bridges, then the given VMs, then garbage: domains of ours nobody wants any more."""
        for vm_uuid in [u for u, b in self._reported.items() if b["state"] == VmState.DESTROYED.value]:
            del self._reported[vm_uuid]  # reported in an earlier pass; its events are over
            for per_vm in (self._consoles, self._errors, self._failures, self._restarts):
                per_vm.pop(vm_uuid, None)
        bridge_errors = await self.bridges.ensure_all(self._l2s.values())
        ours: dict[str, DomainInfo] = {}
        for info in await self.driver.list_domains(NS):
            if info.meta:
                meta = DomainMeta.from_xml(info.meta)
                ours[meta.vm_uuid] = info
                self._meta[meta.vm_uuid] = meta
        for vm_uuid in sorted(vms):
            await self._sync_one(self._desired[vm_uuid], ours.get(vm_uuid), bridge_errors)
        for vm_uuid, info in ours.items():
            if vm_uuid not in self._desired:
                await self._remove(vm_uuid, info)
        await self.bridges.prune(self._l2s)

    async def _sync_one(self, spec: VmSpec, info: DomainInfo | None,
                        bridge_errors: Mapping[str, BridgeError] | None = None) -> None:
        self._busy.add(spec.uuid)
        try:
            for nic in spec.nics:
                l3 = self._l3s.get(nic.l3_uuid)
                if l3 and bridge_errors and l3.l2_uuid in bridge_errors:
                    raise bridge_errors[l3.l2_uuid]
            await self._converge(spec, info)
            self._errors.pop(spec.uuid, None)
            self._failures.pop(spec.uuid, None)
        except (DriverError, BridgeError, ProcessError, SpecError) as e:
            failures = self._failures[spec.uuid] = self._failures.get(spec.uuid, 0) + 1
            delay = min(2.0 ** failures, self.settings.sync_interval)
            log.error("vm %s: %s (retry in %.0fs)", spec.uuid, e, delay)
            self._errors[spec.uuid] = str(e)
            self._kick_later(spec.uuid, delay)
        finally:
            self._busy.discard(spec.uuid)
            self._mark(spec.uuid)

    async def _converge(self, spec: VmSpec, info: DomainInfo | None) -> None:
        await self._ensure_disks(spec)
        luuid = domain_uuid(spec.uuid)
        if info is None:
            install = "pending" if spec.cdrom and spec.boot_order[:1] == [BootDevice.CDROM] else ""
            meta = DomainMeta(spec.uuid, install=install)
            await self._define(spec, meta)
            state = VmState.STOPPED
        else:
            meta = self._meta[spec.uuid]
            if meta.install_order and meta.install_order != _order_str(spec.boot_order):
                meta = replace(meta, install_order="")  # the spec now says what it wants
            if info.state in ALIVE:
                await self._apply_live(spec, luuid)
            if render(spec, self._context(spec, meta), meta).fingerprint != meta.fingerprint or \
                    meta is not self._meta[spec.uuid]:
                await self._define(spec, meta)
            state = info.state
        await self._enforce_state(spec, luuid, state)

    async def _define(self, spec: VmSpec, meta: DomainMeta) -> None:
        rendered = render(spec, self._context(spec, meta), meta)
        await self.driver.define(rendered.xml)
        self._meta[spec.uuid] = replace(meta, fingerprint=rendered.fingerprint)
        log.info("vm %s defined (fingerprint %s)", spec.uuid, rendered.fingerprint)

    def _context(self, spec: VmSpec, meta: DomainMeta) -> DomainContext:
        nets = {}
        for nic in spec.nics:
            l3 = self._l3s.get(nic.l3_uuid)
            l2 = self._l2s.get(l3.l2_uuid) if l3 else None
            if l3 is None or l2 is None:
                raise SpecError(f"nic {nic.uuid}: l3 {nic.l3_uuid} or its l2 is not in this host's state")
            nets[nic.uuid] = NicNet(l2.bridge, l3.mtu)
        s = self.settings
        return DomainContext(
            domain_type=self.domain_type,
            modes=resolve_modes(spec, self._configs, Modes(s.cpu_mode, s.cache_mode, s.console_mode)),
            nets=nets,
            serial_log=str(Path(s.serial_log_dir) / f"{spec.uuid}.log"),
            boot_order=effective_boot_order(spec, meta),
            console_listen=s.console_listen,
            asset_tag=s.smbios_asset_tag,
        )

    async def _ensure_disks(self, spec: VmSpec) -> None:
        """Create missing qcow2 files (over their backing file, if any); never touch existing ones."""
        for vol in spec.volumes:
            disk = vol.disk
            if not isinstance(disk, FileDisk) or Path(disk.path).exists():
                continue
            Path(disk.path).parent.mkdir(parents=True, exist_ok=True)
            argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
            size = disk.size_bytes
            if disk.backing:
                info = json.loads((await arun(["qemu-img", "info", "-U", "--output=json", disk.backing])).stdout)
                argv += ["-b", disk.backing, "-F", info["format"]]
                size = max(size, int(info["virtual-size"]))
            await arun([*argv, disk.path, str(size)])
            log.info("vm %s: created %s", spec.uuid, disk.path)

    async def _apply_live(self, spec: VmSpec, luuid: str) -> None:
        """Cdrom media and data volumes of a running domain (the rest waits for its next boot)."""
        live = ET.fromstring(await self.driver.xml(luuid))
        disks = live.findall("devices/disk")
        alias = {d: (d.find("alias").get("name") if d.find("alias") is not None else "") for d in disks}
        cdrom = next((d for d in disks if alias[d] == CDROM_ALIAS), None)
        want_iso = spec.cdrom.path if spec.cdrom else None
        if cdrom is not None:
            src = cdrom.find("source")
            if (src.get("file") if src is not None else None) != want_iso:
                await self.driver.change_media(luuid, with_cdrom_source(ET.tostring(cdrom, "unicode"), spec.cdrom))
        live_vols = {alias[d].removeprefix(VOL_ALIAS) for d in disks if alias[d].startswith(VOL_ALIAS)}
        data = {v.uuid: v for v in spec.volumes if v.role != "root"}
        for gone in sorted(live_vols - set(data) - {v.uuid for v in spec.volumes}):
            await self.driver.detach_alias(luuid, VOL_ALIAS + gone)
        taken = {d.find("target").get("dev") for d in disks}
        cache = resolve_modes(spec, self._configs, Modes(cache=self.settings.cache_mode)).cache
        for new in sorted(set(data) - live_vols):
            target = next(t for t in (target_name(i) for i in range(1, 702)) if t not in taken)
            taken.add(target)
            await self.driver.attach_device(luuid, ET.tostring(disk_element(data[new], target, cache), "unicode"))
            log.info("vm %s: attached volume %s as %s", spec.uuid, new, target)

    async def _enforce_state(self, spec: VmSpec, luuid: str, actual: VmState) -> None:
        """Start, pause, resume or stop toward the desired state, honouring the drift policy."""
        have, want = _kind(actual), spec.state
        known = self._intent_known(spec)
        stopper = self._stoppers.get(spec.uuid)
        if stopper and want != "Stopped":
            stopper.cancel()  # wanted alive again before the guest went down
            stopper = None
        if have == want:
            if not known:
                await self._record_intent(spec, luuid)
            return
        if stopper:
            return  # a graceful stop is under way
        if self._adopted(spec, actual):
            log.info("vm %s: %s out of band; adopted (desired %s)", spec.uuid, have, want)
            return
        if want == "Stopped":
            if have == "Paused":
                await self.driver.resume(luuid)  # a paused guest cannot hear the power button
            self._stoppers[spec.uuid] = asyncio.ensure_future(self._stop(spec.uuid, luuid))
        else:
            if have == "Stopped":
                if known and not self._restart_allowed(spec.uuid):
                    return
                await self.driver.start(luuid)
            if want == "Paused":
                await self.driver.pause(luuid)
            elif have == "Paused":
                await self.driver.resume(luuid)
        log.info("vm %s: %s -> %s", spec.uuid, have, want)
        if not known:
            await self._record_intent(spec, luuid)

    def _intent_known(self, spec: VmSpec) -> bool:
        """Did the agent already enforce (or see fulfilled) this spec generation's desired state?"""
        meta = self._meta.get(spec.uuid)
        return meta is not None and meta.intent == spec.state and meta.intent_generation == spec.generation

    def _adopted(self, spec: VmSpec, actual: VmState) -> bool:
        """Under `adopt`: a state differing from an already-enforced desired state is the user's."""
        return (self.settings.drift_policy == "adopt" and _kind(actual) != spec.state
                and spec.uuid not in self._stoppers and self._intent_known(spec))

    async def _stop(self, vm_uuid: str, luuid: str) -> None:
        """Graceful stop in the background (a VM's stop must not hold up the others)."""
        log.info("vm %s: shutdown requested (forced after %.0fs)", vm_uuid, self.settings.stop_timeout)
        try:
            if not await self.driver.stop(luuid, self.settings.stop_timeout):
                log.info("vm %s: graceful stop timed out; destroyed", vm_uuid)
        except NoDomain:
            pass
        except DriverError as e:
            log.error("vm %s: stop failed: %s", vm_uuid, e)
            self._kick_later(vm_uuid, 2.0)
        finally:
            if self._stoppers.get(vm_uuid) is asyncio.current_task():
                del self._stoppers[vm_uuid]

    def _restart_allowed(self, vm_uuid: str) -> bool:
        """Out-of-band stops are undone at once, repeated ones with a doubling delay."""
        now = time.monotonic()
        count, last = self._restarts.get(vm_uuid, (0, 0.0))
        count = count + 1 if now - last < max(self.settings.restart_backoff_max, 1) * 2 else 0
        delay = 0.0 if count == 0 else min(2.0 ** (count - 1), self.settings.restart_backoff_max)
        if now - last < delay:
            self._kick_later(vm_uuid, delay - (now - last))
            return False
        self._restarts[vm_uuid] = (count, now)
        log.info("vm %s: restarting after an out-of-band stop (policy restart)", vm_uuid)
        return True

    async def _record_intent(self, spec: VmSpec, luuid: str) -> None:
        meta = replace(self._meta[spec.uuid], intent=spec.state, intent_generation=spec.generation)
        await self.driver.set_metadata(luuid, meta.to_xml(), NS_PREFIX, NS)
        self._meta[spec.uuid] = meta

    async def _remove(self, vm_uuid: str, info: DomainInfo) -> None:
        self._busy.add(vm_uuid)
        try:
            await self.driver.destroy(info.uuid)
            await self.driver.undefine(info.uuid)
            log.info("vm %s destroyed and undefined (not desired any more)", vm_uuid)
        except NoDomain:
            pass
        except DriverError as e:
            log.error("vm %s: removal failed: %s", vm_uuid, e)
        finally:
            self._meta.pop(vm_uuid, None)
            self._busy.discard(vm_uuid)
            self._mark(vm_uuid)

    async def _install_switch(self, vm_uuid: str) -> None:
        """First reboot of an ISO-installed VM: HardDisk first from now on (cold restart applies it)."""
        async with self._lock:
            spec, meta = self._desired.get(vm_uuid), self._meta.get(vm_uuid)
            if spec is None or meta is None or meta.install != "pending":
                return
            luuid = domain_uuid(vm_uuid)
            self._busy.add(vm_uuid)
            try:
                await self._define(spec, replace(meta, install="done", install_order=_order_str(spec.boot_order)))
                await self.driver.destroy(luuid)
                await self.driver.start(luuid)
                log.info("vm %s: install rebooted; boot order now %s", vm_uuid,
                         _order_str(effective_boot_order(spec, self._meta[vm_uuid])))
            except DriverError as e:
                log.error("vm %s: boot order switch failed: %s", vm_uuid, e)
                self._errors[vm_uuid] = str(e)
            finally:
                self._busy.discard(vm_uuid)
                self._mark(vm_uuid)

    # -- events, observation, reporting ---------------------------------------------------------------
    def _on_event(self, ev: DomainEvent) -> None:
        """libvirt callback (event loop thread): only bookkeeping, the tasks do the work."""
        vm_uuid = ev.name if domain_uuid(ev.name) == ev.uuid else None
        if vm_uuid is None or (vm_uuid not in self._meta and vm_uuid not in self._desired):
            return  # not ours
        if ev.event == "REBOOTED":
            meta = self._meta.get(vm_uuid)
            if meta is not None and meta.install == "pending":
                self._spawn(self._install_switch(vm_uuid))
            return
        self._mark(vm_uuid)

    def _mark(self, vm_uuid: str) -> None:
        self._dirty[vm_uuid] = None
        self._observe_wake.set()

    def _kick(self, vm_uuid: str) -> None:
        self._to_enforce[vm_uuid] = None
        self._enforce_wake.set()

    def _kick_later(self, vm_uuid: str, delay: float) -> None:
        async def later() -> None:
            await asyncio.sleep(delay)
            self._kick(vm_uuid)

        self._spawn(later())

    async def _observe_loop(self) -> None:
        while True:
            await self._observe_wake.wait()
            self._observe_wake.clear()
            for vm_uuid in [u for u in self._dirty if u not in self._busy]:
                del self._dirty[vm_uuid]
                try:
                    await self._observe(vm_uuid)
                except DriverError as e:
                    log.warning("vm %s: cannot observe: %s", vm_uuid, e)

    async def _observe(self, vm_uuid: str) -> None:
        """Read the VM's state now (not the event's), report it if it changed, enforce if needed."""
        spec = self._desired.get(vm_uuid)
        known_id, console = self._consoles.get(vm_uuid, (None, None))
        try:
            state, dom_id, live = await self.driver.observe(domain_uuid(vm_uuid), known_id)
        except NoDomain:
            state, dom_id, live = (VmState.UNKNOWN if spec else VmState.DESTROYED), -1, None
        if dom_id != known_id:
            address = console_from_xml(live, self.settings.host_address) if live else None
            console = address and {"host": address.host, "port": address.port, "protocol": address.protocol}
            self._consoles[vm_uuid] = (dom_id, console)
        mismatch = spec is not None and _kind(state) != spec.state
        drift = mismatch and self._adopted(spec, state)
        body: dict = {"state": state.value, "console": console, "boot_order": None}
        if spec is not None and vm_uuid in self._meta:
            body["boot_order"] = [d.value for d in effective_boot_order(spec, self._meta[vm_uuid])]
        if drift:
            body["drift"], body["generation"] = True, spec.generation  # the coordinator adopts against it
        if vm_uuid in self._errors:
            body["error"] = self._errors[vm_uuid]
        if self._reported.get(vm_uuid) == body:
            return  # a steady mismatch (stop in progress, adopted drift, backoff) has its own timer
        self._reported[vm_uuid] = body
        await self._emit(vm_uuid, body)
        if mismatch and not drift:
            self._kick(vm_uuid)

    async def _emit(self, vm_uuid: str, body: dict) -> None:
        try:
            result = self._report("vm", vm_uuid, body)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("report of vm %s failed", vm_uuid)

    async def _enforce_loop(self) -> None:
        while True:
            await self._enforce_wake.wait()
            self._enforce_wake.clear()
            batch, self._to_enforce = list(self._to_enforce), {}
            async with self._lock:
                for vm_uuid in batch:
                    spec = self._desired.get(vm_uuid)
                    if spec is None:
                        continue
                    try:
                        info = await self.driver.domain_info(domain_uuid(vm_uuid), NS)
                    except DriverError as e:
                        log.warning("vm %s: %s", vm_uuid, e)
                        continue
                    if info is not None and info.meta:
                        self._meta[vm_uuid] = DomainMeta.from_xml(info.meta)
                    await self._sync_one(spec, info)

    async def _periodic_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sync_interval * random.uniform(0.8, 1.2))  # noqa: S311
            try:
                await self.resync()
            except DriverError as e:
                log.warning("periodic sync failed: %s", e)
