"""Lease changes on their way to the journal: coalesced per NIC and debounced.

A guest decides how often its lease changes (RELEASE, DECLINE, REQUEST, as fast as it can send them),
and every reported change is an fsync on the agent, an upload and an etcd revision. So a change is only
noted here; a NIC's latest state goes to the journal once its window has passed, and only when it differs
from what was last reported. The window starts at `debounce` and doubles each time the NIC changes
again within it, up to `debounce_max`: a NIC that flaps costs one event per `debounce_max`, a NIC that
changes once is reported after `debounce`. `close()` reports what is pending at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

Sink = Callable[[str, dict[str, object]], None]  # (nic uuid, body) -> the journal


@dataclass
class _Nic:
    body: dict[str, object] | None = None  # pending, not yet reported
    reported: dict[str, object] | None = None  # the body last reported
    window: float = 0.0
    due: float = 0.0  # when the pending state may go out
    timer: asyncio.TimerHandle | None = None


class LeaseReports:
    """`note(nic, body)` for every change; the sink sees at most one body per NIC and window."""

    def __init__(self, sink: Sink, debounce: float = 1.0, debounce_max: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self._sink = sink
        self.debounce = debounce
        self.debounce_max = max(debounce, debounce_max)
        self._clock = clock
        self._nics: dict[str, _Nic] = {}
        self.stats: Counter[str] = Counter()

    def note(self, nic_uuid: str, body: dict[str, object]) -> None:
        self.stats["noted"] += 1
        nic = self._nics.setdefault(nic_uuid, _Nic(window=self.debounce))
        nic.body = body
        if nic.timer is None:
            now = self._clock()
            delay = max(self.debounce, nic.due - now)
            nic.timer = asyncio.get_running_loop().call_later(delay, self._flush, nic_uuid)

    def retain(self, nic_uuids: Iterable[str]) -> None:
        """Forget NICs no longer served (their pending change is reported first)."""
        keep = set(nic_uuids)
        for uuid in [u for u in self._nics if u not in keep]:
            self._flush(uuid)
            del self._nics[uuid]

    def close(self) -> None:
        for uuid in list(self._nics):
            self._flush(uuid)

    def _flush(self, nic_uuid: str) -> None:
        nic = self._nics[nic_uuid]
        if nic.timer is not None:
            nic.timer.cancel()
            nic.timer = None
        body, nic.body = nic.body, None
        if body is None or body == nic.reported:
            return
        now = self._clock()
        recent = now - nic.due < nic.window  # changed again soon after the last report: widen the window
        nic.window = min(nic.window * 2, self.debounce_max) if recent else self.debounce
        nic.due = now + nic.window
        nic.reported = body
        self.stats["reported"] += 1
        self._sink(nic_uuid, body)
