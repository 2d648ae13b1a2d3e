"""Reboots the API asks for: due once per sequence, power off then a fresh start, overtaken by a stop."""

from __future__ import annotations

import asyncio

import pytest

from agentkit.model import VmSpec
from agentkit.supervise import Supervisor
from kvmagent.domain_xml import DomainMeta
from kvmagent.errors import DriverError
from kvmagent.vms.reboot import RETRY, Reboots, due

SPEC = VmSpec(uuid="aaaaaaaa-0000-4000-8000-000000000001", name="v", reboot_seq=2)


def test_a_reboot_is_due_once_per_sequence_and_never_on_a_domain_older_than_reboots():
    assert due(SPEC, DomainMeta(SPEC.uuid, reboot_seq=1))
    assert not due(SPEC, DomainMeta(SPEC.uuid, reboot_seq=2))
    assert not due(SPEC, DomainMeta(SPEC.uuid))  # defined before: the spec's sequence counts as applied
    assert DomainMeta.from_xml(DomainMeta(SPEC.uuid, reboot_seq=2).to_xml()).reboot_seq == 2


class Driver:
    """What a reboot asks of libvirt, recorded; `stop` returns once `stopped` is set."""

    def __init__(self, graceful: bool = True, fail_start: bool = False):
        self.calls: list[str] = []
        self.stopped = asyncio.Event()
        self.graceful, self.fail_start = graceful, fail_start

    async def stop(self, luuid: str, timeout: float) -> bool:
        self.calls.append(f"stop {timeout}")
        await self.stopped.wait()
        return self.graceful

    async def start(self, luuid: str) -> None:
        self.calls.append("start")
        if self.fail_start:
            raise DriverError("start: boom")


@pytest.fixture
async def tasks():
    s = Supervisor()
    yield s
    await s.stop()


async def run_reboot(driver: Driver, tasks: Supervisor, cancel: bool = False) -> list[tuple[str, float]]:
    kicks: list[tuple[str, float]] = []
    reboots = Reboots(driver, 7.0, tasks, lambda vm, delay: kicks.append((vm, delay)))  # type: ignore[arg-type]
    reboots.start("vm1", "luuid1")
    await asyncio.sleep(0)
    assert reboots.active("vm1")  # neither observed nor enforced meanwhile
    if cancel:
        reboots.cancel("vm1")
    driver.stopped.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert not reboots.active("vm1")
    return kicks


@pytest.mark.parametrize("graceful", [True, False])  # forced off after the timeout: started all the same
async def test_a_reboot_powers_off_then_starts_and_hands_the_vm_back(tasks, graceful):
    driver = Driver(graceful)
    assert await run_reboot(driver, tasks) == [("vm1", 0.0)]
    assert driver.calls == ["stop 7.0", "start"]


async def test_a_stop_overtaking_a_reboot_leaves_the_guest_off(tasks):
    driver = Driver()
    assert await run_reboot(driver, tasks, cancel=True) == []
    assert driver.calls == ["stop 7.0"]


async def test_a_failed_reboot_is_looked_at_again(tasks):
    assert await run_reboot(Driver(fail_start=True), tasks) == [("vm1", RETRY)]
