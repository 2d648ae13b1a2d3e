"""At most one pending retry per VM, the earliest asked for.

A VM that fails, or waits for a guest, asks to be looked at again later; so does every visit of it that
finds the same. Were each request a timer of its own, every resync, event or reconnect would start a
chain that keeps itself alive; here a request while one is pending only moves it earlier, and the owner
cancels it when something looks at the VM anyway (that visit asks again if it still needs to).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Retries:
    """`later(vm, delay)` calls `due(vm)` in `delay` seconds, unless a call for that VM is due sooner."""

    def __init__(self, due: Callable[[str], None]) -> None:
        self._due = due
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def later(self, vm_uuid: str, delay: float) -> None:
        loop = asyncio.get_running_loop()
        pending = self._timers.get(vm_uuid)
        if pending is not None:
            if pending.when() <= loop.time() + delay:
                return
            pending.cancel()
        self._timers[vm_uuid] = loop.call_later(delay, self._fire, vm_uuid)

    def cancel(self, vm_uuid: str) -> None:
        timer = self._timers.pop(vm_uuid, None)
        if timer is not None:
            timer.cancel()

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _fire(self, vm_uuid: str) -> None:
        del self._timers[vm_uuid]
        self._due(vm_uuid)
