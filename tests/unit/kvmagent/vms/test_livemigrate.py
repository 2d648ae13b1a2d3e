"""The source side of a live migration: the domain is sent once the target prepared for it, and only then."""

from __future__ import annotations

import asyncio

from agentkit.model import LiveMigration, VmSpec
from agentkit.supervise import Supervisor
from kvmagent.domain_xml import domain_uuid
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
    live = LiveMigrator(driver, Ledger(), tasks, lambda vm_uuid, delay: None, 30.0)
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
