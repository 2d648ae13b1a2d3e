"""The source side of a live migration: the domain is sent once the target prepared for it, and only then."""

from __future__ import annotations

import asyncio

from agentkit.model import LiveMigration, VmSpec
from agentkit.supervise import Supervisor
from kvmagent.domain_xml import domain_uuid
from kvmagent.errors import DriverError
from kvmagent.libvirt_driver import LibvirtDriver
from kvmagent.vms.ledger import Ledger
from kvmagent.vms.livemigrate import LiveMigrator

MOVE = LiveMigration(id="move0001", host="hostb", uri="qemu+tcp://b/system", address="198.18.0.2", prepared=False)
SPEC = VmSpec(uuid="aaaaaaaa-0000-4000-8000-000000000001", name="v", migrate_to=MOVE)


class Sending(LibvirtDriver):
    def __init__(self) -> None:
        super().__init__("test:///default")
        self.sent: list[tuple[str, str, str]] = []

    async def migrate(self, uuid: str, dest_uri: str, data_uri: str) -> None:
        self.sent.append((uuid, dest_uri, data_uri))


async def test_the_running_domain_is_sent_only_once_the_target_prepared_for_it():
    driver, tasks = Sending(), Supervisor()
    live = LiveMigrator(driver, Ledger(), tasks, lambda vm_uuid, delay: None, 30.0, lambda vm_uuid: None)
    live.ensure(SPEC)
    await asyncio.sleep(0.05)
    assert driver.sent == []  # the target's bridges, filters and EIPs may not be there yet
    live.ensure(SPEC.model_copy(update={"migrate_to": MOVE.model_copy(update={"prepared": True})}))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if driver.sent:
            break
    await tasks.stop()
    assert driver.sent == [(domain_uuid(SPEC.uuid), "qemu+tcp://b/system", "tcp://198.18.0.2")]


class Refused(Sending):
    """A send libvirt keeps going until it is aborted, then refuses; `sending` as libvirt's job says."""

    def __init__(self) -> None:
        super().__init__()
        self.job = asyncio.Event()
        self.aborted = asyncio.Event()

    async def migrate(self, uuid: str, dest_uri: str, data_uri: str) -> None:
        self.sent.append((uuid, dest_uri, data_uri))
        self.job.set()
        await self.aborted.wait()
        self.job.clear()
        raise DriverError(f"migrate {uuid}: operation aborted: migration out job: canceled by client")

    async def sending(self, uuid: str) -> bool:
        return self.job.is_set()

    async def abort_migration(self, uuid: str) -> None:
        self.aborted.set()


async def test_a_move_called_off_aborts_its_send_and_is_tried_no_more(monkeypatch):
    monkeypatch.setattr("kvmagent.vms.livemigrate.ABORT_POLL", 0.01)
    driver, tasks, ledger = Refused(), Supervisor(), Ledger()
    retried: list[str] = []
    settled: list[str] = []
    live = LiveMigrator(driver, ledger, tasks, lambda vm_uuid, delay: retried.append(vm_uuid), 30.0, settled.append)
    ready = MOVE.model_copy(update={"prepared": True})
    live.ensure(SPEC.model_copy(update={"migrate_to": ready}))
    await asyncio.wait_for(driver.job.wait(), 1)
    assert live.busy(SPEC.uuid)
    ledger.errors[SPEC.uuid] = "live migration to host hostb failed: an earlier try"
    live.ensure(SPEC.model_copy(update={"migrate_to": ready.model_copy(update={"abort": True})}))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if not live.busy(SPEC.uuid):
            break
    assert not live.busy(SPEC.uuid) and driver.aborted.is_set()
    assert retried == [] and SPEC.uuid not in ledger.errors  # no retry, no error left: the move is over
    assert SPEC.uuid in settled  # the observer looks again, and reports the VM kept
    live.ensure(SPEC.model_copy(update={"migrate_to": ready.model_copy(update={"abort": True})}))
    await asyncio.sleep(0.05)
    await tasks.stop()
    assert len(driver.sent) == 1  # nothing sent again
