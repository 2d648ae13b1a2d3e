"""The agent's pipeline: desired state in (the link) → reconcile → dataplane components.

Updates only mark the view dirty; each component is an actor with its own task that applies the
latest whole view whenever it is dirty (Felix style), so components never wait on each other. A
component that needs another's work (flatnet needs the bridge the VM reconciler makes) fails and is
retried with capped backoff; a jittered periodic resync re-applies everything (level-triggered:
applying the same view twice changes nothing).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Protocol

from agentkit.journal import Journal
from kvmagent.view import HostView

log = logging.getLogger(__name__)


class Component(Protocol):
    name: str

    async def apply(self, view: HostView) -> None: ...

    async def close(self) -> None: ...


@dataclass
class Stats:
    reconciles: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    last_error: dict[str, str] = field(default_factory=dict)
    last_seconds: dict[str, float] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)
    applied_at: float = 0.0

    @property
    def applied_rev(self) -> int:
        """The revision every component has applied."""
        return min(self.applied.values(), default=0)


class Reconciler:
    """One task per component (an actor): a slow VM define never delays a DHCP reservation."""

    def __init__(self, components: list[Component], resync_interval: float = 60.0):
        self.components = components
        self.resync_interval = resync_interval
        self.view = HostView()
        self.stats = Stats()
        self._dirty = {c.name: asyncio.Event() for c in components}
        self._have_state = False

    async def on_state(self, state: dict[str, object], rev: int) -> None:
        """Link callback: remember the newest whole view; every component's task picks it up."""
        self.view = HostView.from_state(state, rev)
        self._have_state = True
        self.poke()

    def poke(self) -> None:
        """Ask every component to reconcile now (new state, libvirt reconnected)."""
        if self._have_state:
            for ev in self._dirty.values():
                ev.set()

    async def run(self) -> None:
        await asyncio.gather(*(self._run_one(c) for c in self.components))

    async def _run_one(self, comp: Component) -> None:
        dirty = self._dirty[comp.name]
        backoff = 0.0
        while True:
            timeout = backoff or self.resync_interval * random.uniform(0.8, 1.2)
            try:
                await asyncio.wait_for(dirty.wait(), timeout)
            except TimeoutError:
                pass
            if not self._have_state:
                continue
            dirty.clear()
            ok = await self.apply_one(comp, self.view)
            backoff = 0.0 if ok else min(max(backoff * 2, 0.5), 30.0)

    async def apply_one(self, comp: Component, view: HostView) -> bool:
        t0 = time.monotonic()
        try:
            await comp.apply(view)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a component's failure must not stop the others; it is retried
            self.stats.errors[comp.name] = self.stats.errors.get(comp.name, 0) + 1
            self.stats.last_error[comp.name] = f"{type(e).__name__}: {e}"
            log.exception("reconcile of %s failed", comp.name)
            return False
        finally:
            self.stats.reconciles += 1
            self.stats.last_seconds[comp.name] = time.monotonic() - t0
        self.stats.last_error.pop(comp.name, None)
        self.stats.applied[comp.name] = view.rev
        log.debug("%s applied rev %d in %.1f ms", comp.name, view.rev, (time.monotonic() - t0) * 1000)
        self.stats.applied_at = time.time()
        return True

    async def close(self) -> None:
        for comp in reversed(self.components):
            try:
                await comp.close()
            except Exception:
                log.exception("closing %s failed", comp.name)


class Reporter:
    """The observed-state sink components call: journaled first, uploaded by the link."""

    def __init__(self, journal: Journal):
        self.journal = journal

    def __call__(self, kind: str, ident: str, body: dict) -> None:
        self.journal.append(kind, ident, body)
