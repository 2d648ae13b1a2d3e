"""Observation and reports: one report per change, drift for the coordinator to adopt, events filtered."""

from __future__ import annotations

import asyncio

import pytest

from agentkit.model import BootDevice, LiveMigration, VmSpec, VmState
from agentkit.supervise import Supervisor
from flatnet.errors import NamespaceError, NftError
from kvmagent.domain_xml import DomainMeta, domain_uuid
from kvmagent.errors import DataplaneError, NoDomain
from kvmagent.libvirt_driver import DomainEvent, LibvirtDriver
from kvmagent.vms.ledger import Ledger
from kvmagent.vms.observe import Observer, report_body
from kvmagent.vms.power import Power
from kvmagent.vms.settings import VmSettings

UUID = "aaaaaaaa-0000-4000-8000-000000000001"
VNC = ("<domain><devices><serial type='unix'><source mode='bind' path='/c/v.serial.sock'/></serial>"
       "<graphics type='vnc'><listen type='socket' socket='/c/v.vnc.sock'/></graphics></devices></domain>")


class FakeDriver(LibvirtDriver):
    """libvirt's answers to `observe`, set by the test (no connection)."""

    def __init__(self) -> None:
        super().__init__("test:///default")
        self.state: VmState | None = VmState.RUNNING
        self.dom_id = 1
        self.incoming: list[bool] = []  # how each read was asked
        self.left = False  # a domain shut off: by a live migration out of the host (not by the guest, a destroy)

    async def observe(self, uuid: str, known_id: int | None = None,
                      incoming: bool = False) -> tuple[VmState, int, str | None]:
        self.incoming.append(incoming)
        if self.state is None:
            raise NoDomain(f"observe {uuid}: no domain")
        return self.state, self.dom_id, VNC if self.dom_id != known_id else None

    async def stopped_here(self, uuid: str) -> bool:
        return self.state in (VmState.STOPPED, VmState.CRASHED) and not self.left


class Lab:
    def __init__(self, policy: str = "adopt") -> None:
        self.driver = FakeDriver()
        self.ledger = Ledger()
        self.reports: list[dict] = []
        self.enforced: list[str] = []
        self.rebooted: list[str] = []
        power = Power(self.driver, VmSettings(drift_policy=policy), Supervisor(), lambda vm, delay: None)
        self.observer = Observer(self.driver, self.ledger, power, lambda kind, ident, body: self.reports.append(body),
                                 self.enforced.append, self.rebooted.append)

    def want(self, state: str, generation: int, intent: str | None = None) -> VmSpec:
        spec = VmSpec(uuid=UUID, name="v", state=state, generation=generation)
        self.ledger.desired[UUID] = spec
        self.ledger.meta[UUID] = DomainMeta(UUID, intent=intent or "", intent_generation=generation if intent else None)
        return spec

    async def observed(self, count: int) -> dict:
        self.observer.mark(UUID)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(self.reports) >= count:
                break
        assert len(self.reports) == count, self.reports
        return self.reports[-1]


@pytest.fixture
async def lab():
    lab = Lab()
    task = asyncio.create_task(lab.observer.run())
    yield lab
    task.cancel()


def test_report_body():
    spec = VmSpec(uuid=UUID, name="v", generation=4)
    assert report_body(VmState.STOPPED, None, None, None, False, None) == {
        "state": "Stopped", "console": None, "boot_order": None}
    body = report_body(VmState.STOPPED, None, spec, DomainMeta(UUID), True, "boom")
    assert body == {"state": "Stopped", "console": None, "boot_order": ["HardDisk"], "drift": True,
                    "generation": 4, "error": "boom"}
    installed = spec.model_copy(update={"boot_order": [BootDevice.CDROM, BootDevice.HARDDISK]})
    meta = DomainMeta(UUID, install="done", install_order="CdRom,HardDisk", reboot_seq=2)
    assert report_body(VmState.RUNNING, None, installed, meta, False, None) == {
        "state": "Running", "console": None, "boot_order": ["HardDisk", "CdRom"], "reboot_seq": 2,
        "installed": True, "generation": 4}
    applied = DomainMeta(UUID, intent="Stopped", intent_generation=3)  # a stop under way: not yet down
    assert report_body(VmState.RUNNING, None, spec, applied, False, None) == {
        "state": "Running", "console": None, "boot_order": ["HardDisk"], "applied": 3}


async def test_one_report_per_change_with_the_console(lab):
    lab.want("Running", 0, intent="Running")
    body = await lab.observed(1)
    assert body["state"] == "Running" and body["console"] == {"protocol": "vnc", "kinds": ["vnc", "serial"]}
    await lab.observed(1)  # nothing changed: nothing sent
    lab.driver.state = None
    del lab.ledger.desired[UUID]
    assert (await lab.observed(2))["state"] == "Destroyed"
    assert lab.observer.forget_destroyed() == [UUID]


async def test_drift_is_reported_under_adopt_and_enforced_otherwise(lab):
    spec = lab.want("Running", 2, intent="Running")
    lab.driver.state = VmState.PAUSED
    body = await lab.observed(1)
    assert (body["state"], body["drift"], body["generation"]) == ("Paused", True, 2)
    assert lab.enforced == []
    assert lab.observer.adoption_echo(spec.model_copy(update={"state": "Paused", "generation": 3}))
    assert not lab.observer.adoption_echo(spec.model_copy(update={"state": "Stopped", "generation": 3}))
    assert not lab.observer.adoption_echo(spec.model_copy(update={"state": "Paused", "generation": 4}))
    lab.want("Running", 5)  # a new intent, not enforced yet: the reconciler must act
    assert "drift" not in await lab.observed(2)
    assert lab.enforced == [UUID]


def test_events_of_foreign_domains_are_ignored():
    lab = Lab()
    lab.observer.on_event(DomainEvent(domain_uuid("other"), "other", "STOPPED", 0, 0.0))
    lab.want("Running", 0)
    lab.observer.on_event(DomainEvent(domain_uuid(UUID), UUID, "REBOOTED", 0, 0.0))
    assert lab.rebooted == [UUID]


async def test_a_vm_moving_here_arrives_when_it_runs_here_not_when_its_domain_starts(lab):
    """The target's domain is read as `incoming` (libvirt starts it paused: see `_state`), reported nothing
    meanwhile, and `arrived` once it runs."""
    lab.want("Running", 1).incoming = "move0001"
    lab.driver.state = VmState.PAUSED
    lab.observer.mark(UUID)
    await asyncio.sleep(0.05)
    assert lab.reports == [] and lab.driver.incoming == [True]
    lab.driver.state = VmState.RUNNING
    assert await lab.observed(1) == {"state": "Running", "console": None, "boot_order": None, "arrived": "move0001"}


async def test_a_vm_leaving_live_is_released_once(lab):
    """The source reports the VM `migrated` once it stopped here, and not again when its domain goes later,
    though a pass meanwhile forgot what removals were reported: the VM is still this host's until the
    coordinator moves it, and a second report (then about another host's VM) would be refused."""
    gone: list[str] = []

    async def withdraw(vm_uuid: str) -> None:
        gone.append(vm_uuid)
    lab.observer.gone = withdraw
    lab.want("Running", 1).migrate_to = LiveMigration(id="move0001", host="hostb", uri="qemu+tcp://b/system",
                                                      address="198.18.0.2")
    lab.driver.state = VmState.PAUSED  # paused for the last copy of its memory
    released = {"state": "Destroyed", "console": None, "boot_order": None, "migrated": "move0001"}
    assert await lab.observed(1) == released and gone == [UUID]
    assert lab.observer.forget_destroyed() == []
    lab.driver.state = None  # its domain is gone here
    await lab.observed(1)
    assert gone == [UUID]
    del lab.ledger.desired[UUID]  # the coordinator moved it
    assert lab.observer.forget_destroyed() == [UUID]


async def test_an_eip_hand_over_that_fails_is_tried_again_and_the_report_waits_for_it(lab, monkeypatch):
    """A netlink or nft failure while this host lets go of the VM's EIPs (or takes them back) is an expected
    one: logged and tried again, the observer going on; `migrated` is reported only once they were let go."""
    monkeypatch.setattr("kvmagent.vms.observe.HANDOVER_RETRY", 0.05)
    failures = [NamespaceError(netns="hse0a1b2c3d", reason="netlink: No buffer space available"),
                NftError(table="hs_eip", netns="hse0a1b2c3d", reason="Resource busy")]
    calls: list[str] = []

    async def hand_over(vm_uuid: str) -> None:
        calls.append(vm_uuid)
        if failures:
            raise failures.pop(0)
    lab.observer.gone = lab.observer.back = hand_over
    lab.want("Running", 1).migrate_to = LiveMigration(id="move0001", host="hostb", uri="qemu+tcp://b/system",
                                                      address="198.18.0.2")
    lab.driver.state = VmState.PAUSED
    lab.observer.mark(UUID)
    await asyncio.sleep(0.03)
    assert calls == [UUID] and lab.reports == []  # failed: nothing reported yet
    for _ in range(100):  # no event comes: the observer tries again by itself
        await asyncio.sleep(0.01)
        if lab.reports:
            break
    assert len(calls) == 3 and lab.reports == [{"state": "Destroyed", "console": None, "boot_order": None,
                                                "migrated": "move0001"}]
    failures.append(DataplaneError("EIPs not applied: {'hse0a1b2c3e': 'veth did not appear'}"))
    lab.driver.state = VmState.RUNNING  # the move failed: it runs here again
    lab.observer.mark(UUID)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if len(calls) == 5:
            break
    await asyncio.sleep(0.1)
    assert len(calls) == 5  # taken back on the second try, and then left alone


async def test_a_move_called_off_is_reported_kept_once_no_send_runs_and_after_its_eips_came_back(lab):
    """The coordinator ends a move called off on the source's word that the VM runs here and nothing sends it:
    not while this agent's send or abort runs, nor while libvirt runs one (begun before a restart)."""
    back: list[str] = []

    async def restore(vm_uuid: str) -> None:
        back.append(vm_uuid)
    lab.observer.back = restore
    move = LiveMigration(id="move0001", host="hostb", uri="qemu+tcp://b/system", address="198.18.0.2", prepared=True)
    lab.want("Running", 1).migrate_to = move
    lab.driver.state = VmState.PAUSED  # paused for the last copy: released
    assert (await lab.observed(1))["migrated"] == "move0001"
    lab.ledger.desired[UUID].migrate_to = move.model_copy(update={"abort": True})
    lab.driver.state = VmState.RUNNING  # the try failed, or was aborted
    busy, jobs = {UUID}, [True]
    lab.observer.sends = lambda vm_uuid: vm_uuid in busy

    async def sending(uuid: str) -> bool:
        assert uuid == domain_uuid(UUID)
        return jobs[0]
    lab.driver.sending = sending  # type: ignore[method-assign]
    lab.observer.mark(UUID)
    await asyncio.sleep(0.05)
    assert lab.reports[1:] == [] and back == [UUID]  # its EIPs back here at once; kept waits for the send
    busy.clear()
    lab.observer.mark(UUID)
    await asyncio.sleep(0.05)
    assert lab.reports[1:] == []  # libvirt still runs one
    jobs[0] = False
    assert await lab.observed(2) == {"state": "Running", "console": None, "boot_order": None, "kept": "move0001"}
    await asyncio.sleep(0.05)
    assert len(lab.reports) == 2 and back == [UUID]


async def test_a_source_whose_send_failed_reports_why_while_the_vm_runs_on(lab):
    """`hs vm show` of a move libvirt refuses says why (the source tries again with backoff meanwhile)."""
    move = LiveMigration(id="move0001", host="hostb", uri="qemu+tcp://b/system", address="198.18.0.2", prepared=True)
    lab.want("Running", 1)
    await lab.observed(1)  # as it was before the move, console and all
    lab.ledger.desired[UUID].migrate_to = move
    lab.observer.mark(UUID)
    await asyncio.sleep(0.05)
    assert len(lab.reports) == 1  # moving, nothing failed: nothing new
    lab.ledger.errors[UUID] = "live migration to host hostb failed: unable to open /v/serial/x.log: Is a directory"
    failed = await lab.observed(2)
    assert failed == {**lab.reports[0], "error": lab.ledger.errors[UUID]} and failed["state"] == "Running"
    assert failed["console"] is not None


async def test_a_vm_stopped_here_before_it_was_sent_is_reported_kept_stopped_as_drift_under_adopt(lab):
    """The coordinator ends the move on the source's word that the VM stopped here, not sent: libvirt says its
    domain is shut off for a reason of this host's (one shut off by its migration runs on the target), and no send
    of this agent's runs (its end says how it went). The stop is drift under `adopt`: adopted with the move's end."""
    move = LiveMigration(id="move0001", host="hostb", uri="qemu+tcp://b/system", address="198.18.0.2", prepared=True)
    spec = lab.want("Running", 3)
    spec.migrate_to = move
    busy = {UUID}
    lab.observer.sends = lambda vm_uuid: vm_uuid in busy
    lab.driver.state, lab.driver.left = VmState.STOPPED, True  # it left: shut off by the migration
    lab.observer.mark(UUID)
    await asyncio.sleep(0.05)
    lab.driver.left = False  # the guest powered off: its send fails
    lab.observer.mark(UUID)
    await asyncio.sleep(0.05)
    assert lab.reports == []  # not while the send runs
    busy.clear()
    assert await lab.observed(1) == {"state": "Stopped", "console": None, "boot_order": None, "drift": True,
                                     "generation": 3, "kept": "move0001"}
    ended = spec.model_copy(update={"migrate_to": None, "state": "Stopped", "generation": 4})
    assert lab.observer.adoption_echo(ended)  # the move's end adopting the stop: no new intent to enforce


async def test_a_vm_stopped_here_before_it_was_sent_is_kept_without_drift_under_restart():
    """The move ends with the VM desired Running on its source: started again there, as any stopped guest is."""
    lab = Lab(policy="restart")
    task = asyncio.create_task(lab.observer.run())
    lab.want("Running", 3).migrate_to = LiveMigration(id="move0001", host="hostb", uri="qemu+tcp://b/system",
                                                      address="198.18.0.2", prepared=True)
    lab.driver.state = VmState.CRASHED
    assert await lab.observed(1) == {"state": "Crashed", "console": None, "boot_order": None, "kept": "move0001"}
    task.cancel()
