"""The power state machine: start, pause, resume or stop a domain toward its desired state.

States compared are `Running`, `Paused` and `Stopped` (crashed or unknown counts as stopped). The
agent records in the domain's metadata the desired state it enforced (or saw fulfilled) for a spec
generation (a stop once the guest is down: an agent killed before asks for it again, rather than taking
the guest still running for the user's); a state that differs from an already-enforced one is *drift*:
`drift_policy="restart"` enforces it again (repeated restarts back off up to `restart_backoff_max`);
`"adopt"` leaves the VM as the user left it (the observer reports the drift).

Decisions are pure (`kind`, `intent_known`, `path`, `RestartBackoff`); `Power` carries them out and
runs graceful stops in the background so one VM's stop never holds up the others.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agentkit.model import VmSpec, VmState
from agentkit.supervise import Supervisor
from kvmagent.domain_xml import DomainMeta
from kvmagent.errors import DriverError, NoDomain
from kvmagent.libvirt_driver import LibvirtDriver
from kvmagent.vms.reboot import Reboots
from kvmagent.vms.settings import VmSettings

log = logging.getLogger(__name__)
ALIVE = (VmState.RUNNING, VmState.PAUSED)


def kind(state: VmState) -> str:
    """An observed state in the vocabulary of `VmSpec.state` (crashed or unknown counts as stopped)."""
    return state.value if state in ALIVE else "Stopped"


def intent_known(spec: VmSpec, meta: DomainMeta | None) -> bool:
    """Did the agent already enforce (or see fulfilled) this spec generation's desired state?"""
    return meta is not None and meta.intent == spec.state and meta.intent_generation == spec.generation


class Op(enum.Enum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"  # graceful, in the background


def path(have: str, want: str) -> list[Op]:
    """The operations from state kind `have` to `want` (a paused guest cannot hear the power button)."""
    if have == want:
        return []
    if want == "Stopped":
        return [Op.RESUME, Op.STOP] if have == "Paused" else [Op.STOP]
    ops = [Op.START] if have == "Stopped" else []
    if want == "Paused":
        ops.append(Op.PAUSE)
    elif have == "Paused":
        ops.append(Op.RESUME)
    return ops


class RestartBackoff:
    """Out-of-band stops are undone at once, repeated ones with a doubling delay up to `cap`."""

    def __init__(self, cap: float, clock: Callable[[], float] = time.monotonic):
        self.cap = cap
        self.clock = clock
        self._restarts: dict[str, tuple[int, float]] = {}  # vm -> (repeats, when last restarted)

    def wait(self, vm_uuid: str) -> float:
        """0: restart now (recorded as done); else the seconds to wait before asking again."""
        now = self.clock()
        count, last = self._restarts.get(vm_uuid, (0, 0.0))
        count = count + 1 if now - last < max(self.cap, 1) * 2 else 0
        delay = 0.0 if count == 0 else min(2.0 ** (count - 1), self.cap)
        if now - last < delay:
            return delay - (now - last)
        self._restarts[vm_uuid] = (count, now)
        return 0.0

    def forget(self, vm_uuid: str) -> None:
        self._restarts.pop(vm_uuid, None)


class Power:
    """Carries out the power decisions for every VM; `kick_later(vm, delay)` asks for another pass."""

    def __init__(self, driver: LibvirtDriver, settings: VmSettings, tasks: Supervisor,
                 kick_later: Callable[[str, float], None]):
        self.driver = driver
        self.settings = settings
        self._tasks = tasks
        self._kick_later = kick_later
        self._stoppers: dict[str, asyncio.Task[Any]] = {}  # graceful stops in progress
        self.restarts = RestartBackoff(settings.restart_backoff_max)
        self.reboots = Reboots(driver, settings.stop_timeout, tasks, kick_later)

    def stopping(self, vm_uuid: str) -> bool:
        return vm_uuid in self._stoppers

    def adopted(self, spec: VmSpec, actual: VmState, meta: DomainMeta | None) -> bool:
        """Under `adopt`: a state differing from an already-enforced desired state is the user's; so is any
        state of a VM moving live (it ran as desired when its move began, and nothing here changes it since)."""
        return (self.settings.drift_policy == "adopt" and kind(actual) != spec.state
                and not self.stopping(spec.uuid) and (intent_known(spec, meta) or spec.migrate_to is not None))

    def forget(self, vm_uuid: str) -> None:
        self.restarts.forget(vm_uuid)

    async def enforce(self, spec: VmSpec, luuid: str, actual: VmState, meta: DomainMeta | None,
                      record_intent: Callable[[], Awaitable[None]]) -> None:
        """Move toward the desired state, honouring the drift policy; record the intent once met."""
        have, want = kind(actual), spec.state
        if self.reboots.active(spec.uuid) and want != "Stopped":
            return  # the reboot brings it back
        known = intent_known(spec, meta)
        if self.stopping(spec.uuid):
            # The guest heard the power button and goes down whatever is asked next: a state wanted
            # meanwhile is enforced (and recorded) once it is down, so that its going down is not taken
            # for drift and adopted over the newer intent. The stop's end asks for that pass.
            return
        if have == want:
            if not known:
                await record_intent()
            return
        if self.adopted(spec, actual, meta):
            log.info("vm %s: %s out of band; adopted (desired %s)", spec.uuid, have, want)
            return
        ops = path(have, want)
        if ops[0] is Op.START and known:
            delay = self.restarts.wait(spec.uuid)
            if delay:
                self._kick_later(spec.uuid, delay)
                return
            log.info("vm %s: restarting after an out-of-band stop (policy restart)", spec.uuid)
        for op in ops:
            await self._run(op, spec.uuid, luuid)
        log.info("vm %s: %s -> %s", spec.uuid, have, want)
        if not known and Op.STOP not in ops:  # a stop is met once the guest is down: the pass its end asks for
            await record_intent()

    async def _run(self, op: Op, vm_uuid: str, luuid: str) -> None:
        if op is Op.STOP:
            self.reboots.cancel(vm_uuid)
            self._stoppers[vm_uuid] = self._tasks.start(self._stop(vm_uuid, luuid), name=f"stop {vm_uuid}")
        elif op is Op.START:
            await self.driver.start(luuid)
        elif op is Op.PAUSE:
            await self.driver.pause(luuid)
        else:
            await self.driver.resume(luuid)

    async def _stop(self, vm_uuid: str, luuid: str) -> None:
        """Graceful stop in the background (a VM's stop must not hold up the others)."""
        log.info("vm %s: shutdown requested (forced after %.0fs)", vm_uuid, self.settings.stop_timeout)
        again = 0.0  # another pass: what was wanted meanwhile (a start) is enforced once the guest is down
        try:
            if not await self.driver.stop(luuid, self.settings.stop_timeout):
                log.info("vm %s: graceful stop timed out; destroyed", vm_uuid)
        except NoDomain:
            pass
        except DriverError as e:
            log.error("vm %s: stop failed: %s", vm_uuid, e)
            again = 2.0
        finally:
            if self._stoppers.get(vm_uuid) is asyncio.current_task():
                del self._stoppers[vm_uuid]
        self._kick_later(vm_uuid, again)
