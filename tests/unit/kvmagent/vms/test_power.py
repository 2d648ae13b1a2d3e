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
    before = DomainMeta(SPEC.uuid, intent="Running", intent_generation=3)
    await power.enforce(stop, "luuid", VmState.RUNNING, before, record(stop))
    await asyncio.sleep(0)  # the graceful stop is under way
    await power.enforce(start, "luuid", VmState.RUNNING, before, record(start))
    assert recorded == [] and driver.ops == ["stop"]  # the running guest does not meet the start: it goes down
    assert not power.adopted(start, VmState.STOPPED, before)
    driver.down.set()
    await until_stopped(power)
    assert kicks == [(SPEC.uuid, 0.0)]  # the pass that enforces the start, now that the guest is down
    await power.enforce(start, "luuid", VmState.STOPPED, before, record(start))
    assert driver.ops == ["stop", "start"] and recorded == [5]


async def until_stopped(power: Power) -> None:
    for _ in range(100):
        if not power.stopping(SPEC.uuid):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the graceful stop did not end")


async def test_a_stop_counts_as_enforced_once_the_guest_is_down_so_an_agent_killed_meanwhile_stops_it_again():
    """Under adopt, a stop recorded as enforced while the guest still ran was a running VM adopted as the
    user's after a restart of the agent (the forced stop after stop_timeout never came): the stop was lost."""
    settings = VmSettings(drift_policy="adopt")
    meta = {SPEC.uuid: DomainMeta(SPEC.uuid, intent="Running", intent_generation=3)}
    stop = SPEC.model_copy(update={"state": "Stopped", "generation": 4})

    async def record() -> None:
        meta[SPEC.uuid] = DomainMeta(SPEC.uuid, intent=stop.state, intent_generation=stop.generation)

    killed = HeardTheButton()  # a guest slow to go down, or deaf to the button
    await Power(killed, settings, Supervisor(), lambda vm, delay: None).enforce(
        stop, "luuid", VmState.RUNNING, meta[SPEC.uuid], record)
    await asyncio.sleep(0)  # the graceful stop is under way when the agent is killed
    assert killed.ops == ["stop"]
    driver = HeardTheButton()
    restarted = Power(driver, settings, Supervisor(), lambda vm, delay: None)
    assert not restarted.adopted(stop, VmState.RUNNING, meta[SPEC.uuid])  # no drift: the stop was not done
    await restarted.enforce(stop, "luuid", VmState.RUNNING, meta[SPEC.uuid], record)
    await asyncio.sleep(0)
    assert driver.ops == ["stop"]  # asked again
    killed.down.set()
    driver.down.set()
    await until_stopped(restarted)
    await restarted.enforce(stop, "luuid", VmState.STOPPED, meta[SPEC.uuid], record)
    assert meta[SPEC.uuid].intent == "Stopped" and meta[SPEC.uuid].intent_generation == 4  # met, now
