"""The facade without libvirtd: desired state is kept and applied once libvirt answers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agentkit.model import FileDisk, LiveMigration, VmSpec, VmState, VolumeSpec
from agentkit.supervise import Supervisor
from kvmagent.domain_xml import DomainMeta, domain_uuid
from kvmagent.errors import DriverError, NoDomain, NotListed
from kvmagent.libvirt_driver import DomainInfo, LibvirtDriver
from kvmagent.vms import VmReconciler, VmSettings


class NoBridges:
    failed: dict = {}


async def test_apply_while_libvirtd_is_away_is_deferred_to_the_reconnect_resync():
    """The state is kept for the reconnect's resync, and the apply fails meanwhile: the VMs' component is failing
    (/health degraded, the host's health naming it), not ok while no VM can change."""
    rec = VmReconciler(LibvirtDriver("test:///default"), NoBridges(),
                       VmSettings(domain_type="qemu", volume_dir="/vols"), lambda kind, ident, body: None)
    spec = VmSpec(uuid="aaaaaaaa-0000-4000-8000-000000000001", name="v",
                  volumes=[VolumeSpec(uuid="r", role="root", disk=FileDisk(path="v/r.qcow2"))])
    with pytest.raises(DriverError, match="not connected"):
        await rec.apply({spec.uuid: spec}, {}, {}, {})
    assert rec.ledger.desired[spec.uuid].volumes[0].disk.path == "/vols/v/r.qcow2"
    assert rec.ledger.ours(spec.uuid) and not rec.ledger.ours("other")
    with pytest.raises(DriverError, match="not connected"):
        await rec.resync()  # what the reconnect hook runs: it fails loudly while libvirtd is away
    await rec.close()


class FailingDestroy(LibvirtDriver):
    """One domain of ours, no longer wanted; libvirt refuses to destroy it `failures` times (no connection)."""

    def __init__(self, failures: int) -> None:
        super().__init__("test:///default")
        self.failures = failures
        self.destroys: list[float] = []
        self.info: DomainInfo | None = DomainInfo(domain_uuid(GONE), GONE, VmState.RUNNING,
                                                  DomainMeta(GONE, taps="hstdead0001").to_xml())

    async def list_domains(self, ns: str) -> list[DomainInfo]:
        return [self.info] if self.info else []

    async def domain_info(self, uuid: str, ns: str) -> DomainInfo | None:
        return self.info

    async def destroy(self, uuid: str) -> None:
        self.destroys.append(time.monotonic())
        if len(self.destroys) <= self.failures:
            raise DriverError("destroy: Failed to terminate process: Device or resource busy")

    async def undefine(self, uuid: str) -> None:
        self.info = None

    async def observe(self, uuid: str, known_id: int | None = None,
                      incoming: bool = False) -> tuple[VmState, int, str | None]:
        if self.info is None:
            raise NoDomain("observe: no domain")
        return self.info.state, 1, None


GONE = "bbbbbbbb-0000-4000-8000-000000000002"


def settings(tmp_path: Path) -> VmSettings:
    """`start()` makes the serial log and console directories: the test's own (the defaults are root's, under
    /var/log and /run, which a machine has only after an agent ran on it)."""
    return VmSettings(domain_type="qemu", serial_log_dir=str(tmp_path / "serial"),
                      console_dir=str(tmp_path / "consoles"))


async def test_a_failed_destroy_is_retried_promptly_and_the_domain_stays_filtered_until_gone(tmp_path: Path):
    driver = FailingDestroy(failures=2)
    rec = VmReconciler(driver, NoBridges(), settings(tmp_path), lambda kind, ident, body: None)
    with pytest.raises(NotListed):
        rec.domain_taps()  # before the first listing a departing domain could be missed: nothing is claimed
    await rec.start()
    assert rec.domain_taps() == {GONE: ("hstdead0001",)}
    t0 = time.monotonic()
    await rec.apply({}, {}, {}, {})
    assert len(driver.destroys) == 1 and rec.domain_taps() == {GONE: ("hstdead0001",)}  # failed: still filtered
    while rec.domain_taps():
        assert time.monotonic() - t0 < 10, "the removal was not retried"
        await asyncio.sleep(0.02)
    gaps = [b - a for a, b in zip(driver.destroys, driver.destroys[1:], strict=False)]
    assert len(driver.destroys) == 3
    assert 0.5 <= gaps[0] < 2.0 and 1.0 <= gaps[1] < 4.0  # with backoff, yet sooner than a VM's retry (2 s, 4 s)
    await rec.close()


async def test_the_domain_of_a_held_vm_is_left_as_it_is_until_its_delete(tmp_path: Path):
    driver = FailingDestroy(failures=0)  # the domain of GONE, running, and nothing of it in the view
    rec = VmReconciler(driver, NoBridges(), settings(tmp_path), lambda kind, ident, body: None)
    await rec.start()
    await rec.apply({}, {}, {}, {}, held={GONE})  # its item is one this agent cannot read
    await rec.apply({}, {}, {}, {}, full=True, held={GONE})
    assert driver.destroys == [] and driver.info is not None and rec.domain_taps() == {GONE: ("hstdead0001",)}
    await rec.apply({}, {}, {}, {})  # deleted
    assert len(driver.destroys) == 1 and driver.info is None
    await rec.close()


class WedgedDestroy(FailingDestroy):
    """libvirt holding the domain's job lock (a libvirtd restarted mid-start): the first destroy waits until
    `freed`, as libvirt's does for up to 30 s."""

    def __init__(self) -> None:
        super().__init__(failures=0)
        self.freed = asyncio.Event()

    async def destroy(self, uuid: str) -> None:
        self.destroys.append(time.monotonic())
        if len(self.destroys) == 1:
            await self.freed.wait()


async def test_a_removal_libvirt_holds_up_does_not_hold_the_hosts_other_changes(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("kvmagent.vms.reconciler.PASS_HOLD", 0.3)
    driver = WedgedDestroy()
    rec = VmReconciler(driver, NoBridges(), settings(tmp_path), lambda kind, ident, body: None)
    await rec.start()
    t0 = time.monotonic()
    await asyncio.wait_for(rec.apply({}, {}, {}, {}), 5)  # the pass goes on (before: until libvirt let go)
    assert 0.3 <= time.monotonic() - t0 < 2 and len(driver.destroys) == 1
    await rec.apply({}, {}, {}, {}, full=True)  # a later pass leaves the removal going on to itself
    assert len(driver.destroys) == 1
    assert rec.domain_taps() == {GONE: ("hstdead0001",)}  # still there, still filtered
    driver.freed.set()
    while rec.domain_taps():  # removed once libvirt lets go
        assert time.monotonic() - t0 < 10, "the removal did not end"
        await asyncio.sleep(0.02)
    assert len(driver.destroys) == 1  # asked once: no second call waiting on libvirt's lock beside the first
    await rec.close()


class WedgedDefine(LibvirtDriver):
    """No domains yet; defining the VM named `wedged` waits until `freed` (libvirt holding it, or its volume
    held by its storage), the others are defined at once (no connection)."""

    def __init__(self) -> None:
        super().__init__("test:///default")
        self.freed = asyncio.Event()
        self.defined: dict[str, str] = {}  # VM uuid: its domain XML

    async def list_domains(self, ns: str) -> list[DomainInfo]:
        return []

    async def domain_info(self, uuid: str, ns: str) -> DomainInfo | None:
        return None

    async def define(self, xml: str) -> str:
        vm_uuid = xml.split("<name>", 1)[1].split("</name>", 1)[0]
        if vm_uuid == WEDGED:
            await self.freed.wait()
        self.defined[vm_uuid] = xml
        return vm_uuid

    async def set_metadata(self, uuid: str, xml: str, prefix: str, ns: str) -> None:
        return None


WEDGED = "cccccccc-0000-4000-8000-000000000003"
OTHER = "dddddddd-0000-4000-8000-000000000004"


async def test_a_vm_whose_change_libvirt_holds_up_does_not_hold_the_other_vms(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("kvmagent.vms.reconciler.PASS_HOLD", 0.3)
    driver = WedgedDefine()
    rec = VmReconciler(driver, NoBridges(), settings(tmp_path), lambda kind, ident, body: None)
    await rec.start()
    wedged, other = VmSpec(uuid=WEDGED, name="wedged", state="Stopped"), VmSpec(uuid=OTHER, name="other",
                                                                                state="Stopped")
    t0 = time.monotonic()
    await asyncio.wait_for(rec.apply({WEDGED: wedged, OTHER: other}, {}, {}, {}), 5)  # before: until libvirt let go
    assert 0.3 <= time.monotonic() - t0 < 2
    assert list(driver.defined) == [OTHER]
    renamed = other.model_copy(update={"name": "other2"})
    await asyncio.wait_for(rec.apply({WEDGED: wedged, OTHER: renamed}, {}, {}, {}, full=True), 0.25)  # not again
    assert "<title>other2</title>" in driver.defined[OTHER]
    driver.freed.set()
    while WEDGED not in driver.defined:
        assert time.monotonic() - t0 < 10, "the wedged VM's change did not end"
        await asyncio.sleep(0.02)
    await rec.close()


class BuggyDefine(WedgedDefine):
    async def define(self, xml: str) -> str:
        raise KeyError("a bug")


async def test_a_bug_in_a_vms_change_ends_the_pass_and_the_process(tmp_path: Path):
    crashes: list[str] = []
    tasks = Supervisor(exit_delay=0.01, on_crash=lambda: crashes.append("crash"))
    rec = VmReconciler(BuggyDefine(), NoBridges(), settings(tmp_path), lambda kind, ident, body: None, tasks=tasks)
    await rec.start()
    with pytest.raises(KeyError):  # as it did before VM changes ran as tasks of their own
        await rec.apply({OTHER: VmSpec(uuid=OTHER, name="other", state="Stopped")}, {}, {}, {})
    await asyncio.sleep(0.05)
    assert crashes == ["crash"] and isinstance(tasks.crashed, KeyError)
    await rec.close()


class HeldDomain(LibvirtDriver):
    """libvirt holding a migrating domain until its job ends: listing waits for `job_over` (no connection)."""

    def __init__(self) -> None:
        super().__init__("test:///default")
        self.job_over = asyncio.Event()
        self.reads = 0

    async def list_domains(self, ns: str) -> list[DomainInfo]:
        await self.job_over.wait()
        return []

    async def observe(self, uuid: str, known_id: int | None = None,
                      incoming: bool = False) -> tuple[VmState, int, str | None]:
        self.reads += 1
        return VmState.RUNNING, 1, None


async def test_the_source_releases_a_vm_that_arrived_there_while_libvirt_still_holds_its_domain(tmp_path: Path):
    """The coordinator's word that the VM runs on the target is acted on at once: neither the listing (which
    waits for the migration's job to end) nor a question to libvirt comes first."""
    driver, reports, gone = HeldDomain(), [], []
    rec = VmReconciler(driver, NoBridges(), settings(tmp_path), lambda kind, ident, body: reports.append(body))

    async def withdraw(vm_uuid: str) -> None:
        gone.append(vm_uuid)
    rec.observer.gone = withdraw
    driver.job_over.set()
    await rec.start()
    move = LiveMigration(id="move0001", host="hostb", uri="qemu+tcp://b/system", address="198.18.0.2")
    spec = VmSpec(uuid=GONE, name="v", migrate_to=move)
    await rec.apply({GONE: spec}, {}, {}, {})
    await asyncio.sleep(0.05)
    assert reports == [] and driver.reads == 1  # it runs here: nothing to say
    driver.job_over.clear()
    arrived = spec.model_copy(update={"migrate_to": move.model_copy(update={"arrived": True})})
    applying = asyncio.create_task(rec.apply({GONE: arrived}, {}, {}, {}))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if reports:
            break
    assert gone == [GONE] and reports == [{"state": "Destroyed", "console": None, "boot_order": None,
                                           "migrated": "move0001"}]
    assert driver.reads == 1 and not applying.done()  # libvirt not asked; the listing still waits
    driver.job_over.set()
    await applying
    await rec.close()


class RefusedDefine(WedgedDefine):
    """libvirt refusing every definition (no connection): the VM fails to converge and waits for its retry."""

    async def define(self, xml: str) -> str:
        self.defined[str(len(self.defined))] = xml
        raise DriverError("define: internal error: unable to execute QEMU command")


async def test_a_failing_vm_waits_for_one_retry_however_often_it_is_visited(tmp_path: Path):
    driver = RefusedDefine()
    rec = VmReconciler(driver, NoBridges(), settings(tmp_path).model_copy(update={"retry_backoff_max": 0.1}),
                       lambda kind, ident, body: None)
    await rec.start()
    spec = VmSpec(uuid=OTHER, name="other", state="Stopped")
    for _ in range(6):  # periodic resyncs, reconnects, storage changes: each visit fails and asks for a retry
        await rec.apply({OTHER: spec}, {}, {}, {}, full=True)
        await asyncio.sleep(0.015)
    before = len(driver.defined)
    await asyncio.sleep(1.0)
    # one retry every 0.1 s, not one per visit that failed (before: six chains, each asking for the next)
    assert 5 <= len(driver.defined) - before <= 13
    assert rec.ledger.errors[OTHER].startswith("define: internal error")
    await rec.close()


class MigratedAway(FailingDestroy):
    """A running domain of ours that libvirt sends to another host and then undefines here itself
    (VIR_MIGRATE_UNDEFINE_SOURCE): the agent never removes it (no connection)."""

    def __init__(self) -> None:
        super().__init__(failures=0)

    async def migrate(self, uuid: str, dest_uri: str, data_uri: str) -> None:
        self.info = None


async def test_a_vm_that_left_live_leaves_no_taps_or_serial_logs_behind(tmp_path: Path):
    logs = tmp_path / "serial"
    logs.mkdir()
    for name in (f"{GONE}.log", f"{GONE}.log.1", f"{OTHER}.log", f"{OTHER}.log.1.tmp", "notes.txt"):
        (logs / name).write_text("boot\n")
    driver, reports = MigratedAway(), []
    rec = VmReconciler(driver, NoBridges(), settings(tmp_path), lambda kind, ident, body: reports.append(body))
    await rec.start()
    move = LiveMigration(id="move0001", host="hostb", uri="qemu+tcp://b/system", address="198.18.0.2")
    await rec.apply({GONE: VmSpec(uuid=GONE, name="v", migrate_to=move)}, {}, {}, {})
    # the first pass, once the host's VMs are known, sweeps the logs of VMs it does not know (OTHER's)
    assert sorted(p.name for p in logs.iterdir()) == [f"{GONE}.log", f"{GONE}.log.1", "notes.txt"]
    for _ in range(100):  # the migration runs in the background; libvirt's event marks the VM
        await asyncio.sleep(0.01)
        rec.observer.mark(GONE)
        if reports:
            break
    assert driver.info is None and reports[-1]["migrated"] == "move0001"
    assert rec.domain_taps() == {GONE: ("hstdead0001",)}  # still its: the coordinator has not moved it yet
    await rec.apply({}, {}, {}, {})  # the coordinator moved it to the target host
    assert rec.domain_taps() == {}
    assert sorted(p.name for p in logs.iterdir()) == ["notes.txt"]
    await rec.close()


class LostAtOnce(FailingDestroy):
    """libvirtd lost again right after the agent connected: the first listing fails, the next ones work."""

    def __init__(self) -> None:
        super().__init__(failures=0)
        self.listings = 0

    async def list_domains(self, ns: str) -> list[DomainInfo]:
        self.listings += 1
        if self.listings == 1:
            raise DriverError("list: End of file while reading data: Input/output error")
        return await super().list_domains(ns)


async def test_the_reconnect_lists_the_domains_the_start_could_not(tmp_path: Path):
    """Anti-spoofing writes nothing before the domains were listed, and the VMs' component (whose pass would
    list them) waits for anti-spoofing: the reconnect's resync lists them before the first pass."""
    rec = VmReconciler(LostAtOnce(), NoBridges(), settings(tmp_path), lambda kind, ident, body: None)
    await rec.start()
    with pytest.raises(NotListed):
        rec.domain_taps()
    await rec.resync()  # libvirtd back
    assert rec.domain_taps() == {GONE: ("hstdead0001",)}
    await rec.close()


class RefusedMigrations(LibvirtDriver):
    """Running domains of ours that libvirt refuses to send to another host; a destroy undefines one (no
    connection)."""

    def __init__(self) -> None:
        super().__init__("test:///default")
        self.domains: dict[str, DomainInfo] = {}
        self.tries = 0

    def run(self, vm_uuid: str, state: VmState = VmState.RUNNING) -> None:
        self.domains[vm_uuid] = DomainInfo(domain_uuid(vm_uuid), vm_uuid, state, DomainMeta(vm_uuid).to_xml())

    async def list_domains(self, ns: str) -> list[DomainInfo]:
        return list(self.domains.values())

    async def domain_info(self, uuid: str, ns: str) -> DomainInfo | None:
        return next((i for i in self.domains.values() if i.uuid == uuid), None)

    async def migrate(self, uuid: str, dest_uri: str, data_uri: str) -> None:
        self.tries += 1
        raise DriverError("migrate: unable to connect to server at 'b:49152': Connection refused")

    async def destroy(self, uuid: str) -> None:
        return None

    async def undefine(self, uuid: str) -> None:
        self.domains = {u: i for u, i in self.domains.items() if i.uuid != uuid}

    async def observe(self, uuid: str, known_id: int | None = None,
                      incoming: bool = False) -> tuple[VmState, int, str | None]:
        info = await self.domain_info(uuid, "")
        if info is None:
            raise NoDomain("observe: no domain")
        return info.state, 1, None


async def test_vms_deleted_after_a_failed_live_migration_leave_no_failure_count_behind(tmp_path: Path):
    driver = RefusedMigrations()
    rec = VmReconciler(driver, NoBridges(), settings(tmp_path), lambda kind, ident, body: None)
    await rec.start()
    move = LiveMigration(id="move0001", host="hostb", uri="qemu+tcp://b/system", address="198.18.0.2")
    for i in range(300):
        vm_uuid = f"eeeeeeee-0000-4000-8000-{i:012d}"
        driver.run(vm_uuid)
        await rec.apply({vm_uuid: VmSpec(uuid=vm_uuid, name="v", migrate_to=move)}, {}, {}, {})
        while driver.tries <= i:  # the migration runs (and fails) in the background
            await asyncio.sleep(0)
        await rec.apply({}, {}, {}, {})  # the user deleted the VM: its domain goes
        rec.observer.mark(vm_uuid)
        await asyncio.sleep(0)
    await rec.apply({}, {}, {}, {})  # the pass that forgets the VMs whose removal was reported
    assert rec.live._failures == {} and rec.ledger.errors == {} and rec.ledger.meta == {}
    await rec.close()


async def test_vms_whose_live_migration_here_failed_leave_no_domain_or_taps_behind(tmp_path: Path):
    driver = RefusedMigrations()
    rec = VmReconciler(driver, NoBridges(), settings(tmp_path), lambda kind, ident, body: None)
    await rec.start()
    for i in range(300):
        vm_uuid = f"eeeeeeee-0000-4000-8000-{i:012d}"
        driver.run(vm_uuid, VmState.PAUSED)  # the incoming domain libvirt made for the copy
        await rec.apply({vm_uuid: VmSpec(uuid=vm_uuid, name="v", incoming="move0001")}, {}, {}, {})
        rec.observer.mark(vm_uuid)
        await asyncio.sleep(0)
        del driver.domains[vm_uuid]  # the copy failed: libvirt dropped the domain
        rec.observer.mark(vm_uuid)
        await asyncio.sleep(0)
        await rec.apply({}, {}, {}, {})  # the coordinator gave the VM back to its source host
    await rec.apply({}, {}, {}, {})
    assert rec.observer._consoles == {}
    assert rec.domain_taps() == {}
    await rec.close()
