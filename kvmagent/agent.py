"""The agent's pipeline: desired state in (the link) → reconcile (one task) → dataplane components.

Updates only mark the view dirty; one task drains them and applies the latest whole view to every
component in order (bridges before VMs before network services). A failed component is retried with
capped backoff, and a jittered periodic resync re-applies everything (level-triggered: applying the
same view twice changes nothing).
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
    last_seconds: float = 0.0
    applied_rev: int = 0
    applied_at: float = 0.0


class Reconciler:
    def __init__(self, components: list[Component], resync_interval: float = 60.0):
        self.components = components
        self.resync_interval = resync_interval
        self.view = HostView()
        self.stats = Stats()
        self._dirty = asyncio.Event()
        self._have_state = False

    async def on_state(self, state: dict[str, object], rev: int) -> None:
        """Link callback: remember the newest whole view; the reconcile task picks it up."""
        self.view = HostView.from_state(state, rev)
        self._have_state = True
        self._dirty.set()

    def poke(self) -> None:
        """Ask for a reconcile now (e.g. libvirt reconnected)."""
        if self._have_state:
            self._dirty.set()

    async def run(self) -> None:
        backoff = 0.0
        while True:
            timeout = backoff or self.resync_interval * random.uniform(0.8, 1.2)
            try:
                await asyncio.wait_for(self._dirty.wait(), timeout)
            except TimeoutError:
                pass
            if not self._have_state:
                continue
            self._dirty.clear()
            ok = await self.reconcile_once(self.view)
            backoff = 0.0 if ok else min(max(backoff * 2, 0.5), 30.0)

    async def reconcile_once(self, view: HostView) -> bool:
        t0 = time.monotonic()
        ok = True
        for comp in self.components:
            try:
                await comp.apply(view)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a component's failure must not stop the others; it is retried
                ok = False
                self.stats.errors[comp.name] = self.stats.errors.get(comp.name, 0) + 1
                self.stats.last_error[comp.name] = f"{type(e).__name__}: {e}"
                log.exception("reconcile of %s failed", comp.name)
        self.stats.reconciles += 1
        self.stats.last_seconds = time.monotonic() - t0
        if ok:
            self.stats.applied_rev, self.stats.applied_at = view.rev, time.time()
        return ok

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
