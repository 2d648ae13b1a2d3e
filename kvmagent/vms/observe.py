"""Observed VM state: libvirt events in, one report per change out.

libvirt lifecycle events (ours and out-of-band: `virsh destroy`, guest poweroff, `virsh start`) only
mark a VM dirty; one task reads each dirty VM's state *now* (and its console address from the live
XML when the domain was started anew) and calls `report("vm", uuid, body)` when the body changed,
in event order. A VM being changed by the reconciler, or rebooting, is observed once it settles. A
state that differs from the desired one is either drift the policy adopts (reported with `drift: true`
and the generation it drifted from) or sent to the reconciler to enforce. A VM moving live hands its EIPs
over (`gone`, `back`); when that fails as expected (netlink, nft), the VM is observed again in
`HANDOVER_RETRY` seconds and its report waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from agentkit.errors import HostStackError
from agentkit.model import OBSERVED_ERROR_MAX, VmSpec, VmState
from kvmagent.domain_xml import DomainMeta, domain_uuid
from kvmagent.errors import DriverError, NoDomain
from kvmagent.libvirt_driver import DomainEvent, LibvirtDriver, console_from_xml, migration_state
from kvmagent.vms.install import effective_boot_order, overridden
from kvmagent.vms.ledger import Ledger
from kvmagent.vms.power import Power, kind
from kvmagent.vms.retries import Retries

log = logging.getLogger(__name__)
HANDOVER_RETRY = 5.0  # seconds before a VM whose EIP hand-over failed is observed (and handed over) again
Report = Callable[[str, str, dict[str, Any]], Awaitable[None] | None]  # (kind, id, body)
Console = dict[str, Any] | None


def report_body(state: VmState, console: Console, spec: VmSpec | None, meta: DomainMeta | None,
                drift: bool, error: str | None) -> dict[str, Any]:
    """What the coordinator is told about one VM (sent only when it differs from the last one)."""
    body: dict[str, Any] = {"state": state.value, "console": console, "boot_order": None}
    if spec is not None and meta is not None:
        body["boot_order"] = [d.value for d in effective_boot_order(spec, meta)]
        if meta.reboot_seq is not None:
            body["reboot_seq"] = meta.reboot_seq  # the last reboot request applied
        if meta.intent_generation is not None:
            body["applied"] = meta.intent_generation  # the generation whose desired state was enforced or met
        if overridden(spec, meta):  # the coordinator records the switch against this generation
            body["installed"], body["generation"] = True, spec.generation
    if drift and spec is not None:
        body["drift"], body["generation"] = True, spec.generation  # the coordinator adopts against it
    if error is not None:
        body["error"] = error[:OBSERVED_ERROR_MAX]
    return body


async def _nothing(vm_uuid: str) -> None:
    return None


class Observer:
    """Event intake, observation and reporting for every VM of the host."""

    def __init__(self, driver: LibvirtDriver, ledger: Ledger, power: Power, report: Report,
                 enforce: Callable[[str], None], rebooted: Callable[[str], None]):
        self.driver = driver
        self.ledger = ledger
        self.power = power
        self._report = report
        self._enforce = enforce
        self._rebooted = rebooted
        self._dirty: dict[str, None] = {}
        self._wake = asyncio.Event()
        self._busy: set[str] = set()  # VMs being changed: observed (and reported) once settled
        self._reported: dict[str, dict[str, Any]] = {}
        self._consoles: dict[str, tuple[int | None, Console]] = {}  # vm -> (domain id, console) last seen
        self._drifted: dict[str, tuple[int, str]] = {}  # vm -> (generation, state kind) of its last drift report
        self.gone: Callable[[str], Awaitable[None]] = _nothing  # a VM leaves for another host (before it is reported)
        self.back: Callable[[str], Awaitable[None]] = _nothing  # ... or runs here again (its move failed)
        self.sends: Callable[[str], bool] = lambda vm_uuid: False  # a send of the VM (or its abort) runs here
        self._migration: dict[str, VmState] = {}  # vm -> its state as a live migration's last event said
        self._retries = Retries(self.mark)  # VMs whose hand-over failed, observed again later

    def on_event(self, ev: DomainEvent) -> None:
        """libvirt callback (event loop thread): only bookkeeping, the tasks do the work."""
        vm_uuid = ev.name if domain_uuid(ev.name) == ev.uuid else None
        if vm_uuid is None or not self.ledger.ours(vm_uuid):
            return  # not ours
        if ev.event == "REBOOTED":
            self._rebooted(vm_uuid)
            return
        moved = migration_state(ev)
        if moved is not None:
            self._migration[vm_uuid] = moved
        self.mark(vm_uuid)

    def mark(self, vm_uuid: str) -> None:
        self._dirty[vm_uuid] = None
        self._wake.set()

    @contextlib.contextmanager
    def changing(self, vm_uuid: str) -> Iterator[None]:
        """While the reconciler changes a VM its events wait; it is observed once it settles."""
        self._busy.add(vm_uuid)
        try:
            yield
        finally:
            self._busy.discard(vm_uuid)
            self.mark(vm_uuid)

    def adoption_echo(self, spec: VmSpec) -> bool:
        """Is `spec` the coordinator writing back the drift this agent reported (policy adopt)?

        The coordinator adopts a drift report of generation g as generation g+1 with the drifted state.
        The user may have changed the VM again before that echo arrives: the echo is then an intent
        already met (at the time of the report), not a new one to enforce over the user's newer change.
        """
        drifted = self._drifted.get(spec.uuid)
        return drifted is not None and drifted == (spec.generation - 1, spec.state)

    def forget_destroyed(self) -> list[str]:
        """VMs whose removal was reported in an earlier pass: their events are over. A VM that left live is
        forgotten once it is no longer this host's: before, its events still come (its domain stops here
        after it runs there), and would report its release again, too late (the coordinator refuses a
        report on a VM that is another host's)."""
        gone = [u for u, b in self._reported.items()
                if b["state"] == VmState.DESTROYED.value and u not in self.ledger.desired]
        for vm_uuid in gone:
            self.forget(vm_uuid)
        return gone

    def reported(self, vm_uuid: str) -> bool:
        return vm_uuid in self._reported

    def forget(self, vm_uuid: str) -> None:
        """What is kept about a VM whose events are over (gone from this host)."""
        for per_vm in (self._reported, self._consoles, self._drifted, self._migration):
            per_vm.pop(vm_uuid, None)

    def close(self) -> None:
        self._retries.close()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            for vm_uuid in [u for u in self._dirty if u not in self._busy and not self.power.reboots.active(u)]:
                del self._dirty[vm_uuid]
                try:
                    await self._observe(vm_uuid)
                except DriverError as e:
                    log.warning("vm %s: cannot observe: %s", vm_uuid, e)

    async def _observe(self, vm_uuid: str) -> None:
        """Read the VM's state now (not the event's), report it if it changed, enforce if needed."""
        self._retries.cancel(vm_uuid)  # observed now: a failed hand-over is tried again below
        spec = self.ledger.desired.get(vm_uuid)
        if spec is not None and (spec.incoming or spec.migrate_to):
            told = self._migration.pop(vm_uuid, None)
            if told is None and spec.migrate_to is not None and spec.migrate_to.arrived:
                told = VmState.UNKNOWN  # it runs there: libvirt (holding the domain until the job ended) is not asked
            await self._moving(spec, told or (await self._read(vm_uuid, True, spec.incoming is not None))[0])
            return
        self._migration.pop(vm_uuid, None)
        state, console = await self._read(vm_uuid, spec is not None)
        mismatch = spec is not None and kind(state) != spec.state
        drift = spec is not None and mismatch and self.power.adopted(spec, state, self.ledger.meta.get(vm_uuid))
        body = report_body(state, console, spec, self.ledger.meta.get(vm_uuid), drift,
                           self.ledger.errors.get(vm_uuid))
        if self._reported.get(vm_uuid) == body:
            return  # a steady mismatch (stop in progress, adopted drift, backoff) has its own timer
        self._reported[vm_uuid] = body
        if drift and spec is not None:
            self._drifted[vm_uuid] = (spec.generation, kind(state))
        await self._emit(vm_uuid, body)
        if mismatch and not drift:
            self._enforce(vm_uuid)

    async def _moving(self, spec: VmSpec, state: VmState) -> None:
        """A VM moving live. The target reports it `arrived` once it runs there, and nothing else until it
        is its own; the source, once it stopped running here (paused for the last copy, or gone), stops
        answering for it (`gone`: its EIPs) and then reports it `migrated`; so does it when the coordinator
        says the VM arrived (libvirt resumes it there only once it stopped here, and may take a while to
        say so here). The coordinator moves it when it has both. A source that runs it again (a failed try)
        answers for it again (`back`) and reports why the try failed (its error, the VM still Running); one
        whose move is called off reports it `kept` once no send of it runs (the agent's, or libvirt's from
        before a restart), and so does one whose domain stopped here, not sent (libvirt says why it is shut
        off; no send of the agent's runs): the move ends with the VM stopped here."""
        if spec.incoming is not None:
            if state == VmState.RUNNING:
                log.info("vm %s: live migration %s arrived (runs here)", spec.uuid, spec.incoming)
                await self._once(spec.uuid, {"state": state.value, "console": None, "boot_order": None,
                                             "arrived": spec.incoming})
            return
        move = spec.migrate_to
        assert move is not None
        if state == VmState.RUNNING and not move.arrived:
            if (self._reported.get(spec.uuid) or {}).get("migrated"):
                if not await self._hand_over(self.back, spec.uuid):
                    return
                del self._reported[spec.uuid]
            if move.abort and not self.sends(spec.uuid) and not await self.driver.sending(domain_uuid(spec.uuid)):
                log.info("vm %s: live migration %s called off (runs here)", spec.uuid, move.id)
                await self._once(spec.uuid, {"state": state.value, "console": None, "boot_order": None,
                                             "kept": move.id})
            elif not move.abort and (error := self.ledger.errors.get(spec.uuid)) is not None:
                console = self._consoles.get(spec.uuid, (None, None))[1]  # the domain's, as last read
                await self._once(spec.uuid, report_body(state, console, spec, self.ledger.meta.get(spec.uuid), False,
                                                        error))  # why a try failed, while it runs on here
            return
        if (state in (VmState.STOPPED, VmState.CRASHED) and not move.arrived and not self.sends(spec.uuid)
                and await self.driver.stopped_here(domain_uuid(spec.uuid))):
            await self._stopped(spec, state, move.id)
            return
        stopped = state in (VmState.PAUSED, VmState.UNKNOWN) or move.arrived  # it runs there: not here any more
        if stopped and not (self._reported.get(spec.uuid) or {}).get("migrated"):
            log.info("vm %s: live migration %s released (%s here, arrived there: %s)", spec.uuid, move.id,
                     state.value, move.arrived)
            if await self._hand_over(self.gone, spec.uuid):
                await self._once(spec.uuid, {"state": VmState.DESTROYED.value, "console": None, "boot_order": None,
                                             "migrated": move.id})

    async def _stopped(self, spec: VmSpec, state: VmState, move: str) -> None:
        """The VM stopped here before it was sent (its guest powered off, it was destroyed or crashed): reported
        `kept` in that state, as drift under `adopt`, so that the coordinator ends the move with the VM on this
        host, shown stopped as any out-of-band stop is."""
        drift = self.power.adopted(spec, state, self.ledger.meta.get(spec.uuid))
        log.info("vm %s: live migration %s ends: %s here before it was sent", spec.uuid, move, state.value)
        await self._once(spec.uuid, {**report_body(state, None, spec, None, drift, None), "kept": move})
        if drift:
            self._drifted[spec.uuid] = (spec.generation, kind(state))

    async def _hand_over(self, step: Callable[[str], Awaitable[None]], vm_uuid: str) -> bool:
        """`gone` or `back`; an expected failure is logged and tried again at the VM's next observation, in
        HANDOVER_RETRY seconds at the latest (`migrated` is not reported before this host stopped answering for
        the VM's EIPs)."""
        try:
            await step(vm_uuid)
        except HostStackError as e:
            log.error("vm %s: EIP hand-over failed (again in %.0fs): %s", vm_uuid, HANDOVER_RETRY, e)
            self._retries.later(vm_uuid, HANDOVER_RETRY)
            return False
        return True

    async def _once(self, vm_uuid: str, body: dict[str, Any]) -> None:
        if self._reported.get(vm_uuid) != body:
            self._reported[vm_uuid] = body
            await self._emit(vm_uuid, body)

    async def _read(self, vm_uuid: str, desired: bool, incoming: bool = False) -> tuple[VmState, Console]:
        """State and console; the live XML is read only when the domain was (re)started."""
        known_id, console = self._consoles.get(vm_uuid, (None, None))
        live: str | None
        try:
            state, dom_id, live = await self.driver.observe(domain_uuid(vm_uuid), known_id, incoming)
        except NoDomain:
            state, dom_id, live = (VmState.UNKNOWN if desired else VmState.DESTROYED), -1, None
        if dom_id != known_id:
            console = console_from_xml(live) if live else None
            self._consoles[vm_uuid] = (dom_id, console)
        return state, console

    async def _emit(self, vm_uuid: str, body: dict[str, Any]) -> None:
        """Hand the report over (the journal queues it: a disk that fails is the journal's to retry)."""
        result = self._report("vm", vm_uuid, body)
        if inspect.isawaitable(result):
            await result
