"""Power decisions: the path between states, intents, the restart backoff and the adopt policy."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from agentkit.model import VmSpec, VmState
from agentkit.supervise import Supervisor
from kvmagent.domain_xml import DomainMeta
from kvmagent.libvirt_driver import LibvirtDriver
from kvmagent.vms.power import Op, Power, RestartBackoff, intent_known, kind, path
from kvmagent.vms.settings import VmSettings

SPEC = VmSpec(uuid="aaaaaaaa-0000-4000-8000-000000000001", name="v", state="Running", generation=3)


def test_crashed_and_unknown_count_as_stopped():
    assert [kind(s) for s in VmState] == [
        "Running" if s is VmState.RUNNING else "Paused" if s is VmState.PAUSED else "Stopped" for s in VmState]


@pytest.mark.parametrize(("have", "want", "ops"), [
    ("Running", "Running", []),
    ("Stopped", "Running", [Op.START]),
    ("Stopped", "Paused", [Op.START, Op.PAUSE]),
    ("Running", "Paused", [Op.PAUSE]),
    ("Paused", "Running", [Op.RESUME]),
    ("Running", "Stopped", [Op.STOP]),
    ("Paused", "Stopped", [Op.RESUME, Op.STOP]),  # a paused guest cannot hear the power button
])
def test_path(have, want, ops):
    assert path(have, want) == ops


def test_intent_is_known_for_one_state_and_generation():
    assert not intent_known(SPEC, None)
    assert not intent_known(SPEC, DomainMeta(SPEC.uuid, intent="Running", intent_generation=2))
    assert not intent_known(SPEC, DomainMeta(SPEC.uuid, intent="Stopped", intent_generation=3))
    assert intent_known(SPEC, DomainMeta(SPEC.uuid, intent="Running", intent_generation=3))


def test_repeated_restarts_back_off_up_to_the_cap():
    now = [100.0]
    backoff = RestartBackoff(cap=4, clock=lambda: now[0])
    assert backoff.wait("vm") == 0.0  # the first out-of-band stop is undone at once
    assert backoff.wait("vm") == 1.0  # the next one waits
    now[0] += 1
    assert backoff.wait("vm") == 0.0
    now[0] += 0.5
    assert backoff.wait("vm") == 1.5  # 2 s after the last restart
    now[0] += 2
    assert backoff.wait("vm") == 0.0
    now[0] += 4
    assert backoff.wait("vm") == 0.0  # capped at 4 s
    now[0] += 100
    assert backoff.wait("vm") == 0.0  # quiet for long enough: counting starts over
    assert backoff.wait("vm") == 1.0
    backoff.forget("vm")
    assert backoff.wait("vm") == 0.0


def test_adopt_only_what_differs_from_an_enforced_intent():
    kicks: list[tuple[str, float]] = []
    power = Power(LibvirtDriver("test:///default"), VmSettings(drift_policy="adopt"), Supervisor(),
                  lambda vm, delay: kicks.append((vm, delay)))
    enforced = DomainMeta(SPEC.uuid, intent="Running", intent_generation=3)
    assert power.adopted(SPEC, VmState.STOPPED, enforced)
    assert power.adopted(SPEC, VmState.CRASHED, enforced)
    assert not power.adopted(SPEC, VmState.RUNNING, enforced)  # no drift
    assert not power.adopted(SPEC, VmState.STOPPED, DomainMeta(SPEC.uuid))  # never enforced: a new intent
    power.settings.drift_policy = "restart"
    assert not power.adopted(SPEC, VmState.STOPPED, enforced)
    assert not power.stopping(SPEC.uuid) and kicks == []


class HeardTheButton(LibvirtDriver):
    """A guest that goes down when the test says, having heard the power button (no connection)."""

    def __init__(self) -> None:
        super().__init__("test:///default")
        self.down = asyncio.Event()
        self.ops: list[str] = []

    async def stop(self, uuid: str, timeout: float, repeat: float = 3.0) -> bool:
        self.ops.append("stop")
        await self.down.wait()
        return True

    async def start(self, uuid: str) -> None:
        self.ops.append("start")


async def test_a_start_during_a_graceful_stop_waits_for_the_guest_to_go_down_and_is_not_adopted_as_drift():
    kicks: list[tuple[str, float]] = []
    driver = HeardTheButton()
    power = Power(driver, VmSettings(drift_policy="adopt"), Supervisor(), lambda vm, delay: kicks.append((vm, delay)))
    recorded: list[int] = []

    def record(spec: VmSpec) -> Callable[[], Awaitable[None]]:
        async def intent() -> None:
            recorded.append(spec.generation)
        return intent

    stop = SPEC.model_copy(update={"state": "Stopped", "generation": 4})
    start = SPEC.model_copy(update={"generation": 5})
    stopping = DomainMeta(SPEC.uuid, intent="Stopped", intent_generation=4)
    await power.enforce(stop, "luuid", VmState.RUNNING, None, record(stop))
    await asyncio.sleep(0)  # the graceful stop is under way
    await power.enforce(start, "luuid", VmState.RUNNING, stopping, record(start))
    assert recorded == [4] and driver.ops == ["stop"]  # the running guest does not meet the start: it goes down
    assert not power.adopted(start, VmState.STOPPED, stopping)
    driver.down.set()
    for _ in range(100):
        if not power.stopping(SPEC.uuid):
            break
        await asyncio.sleep(0.01)
    assert kicks == [(SPEC.uuid, 0.0)]  # the pass that enforces the start, now that the guest is down
    await power.enforce(start, "luuid", VmState.STOPPED, stopping, record(start))
    assert driver.ops == ["stop", "start"] and recorded == [4, 5]
