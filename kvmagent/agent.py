"""The agent's pipeline: desired state in (the link) → reconcile → dataplane components.

Updates only mark the view dirty; each component is an actor with its own supervised task that
applies the latest whole view whenever it is dirty (Felix style). A component names in `after` the
components whose pass over the view's revision must come first: the VMs, anti-spoofing, flat services
and EIPs all plug into the bridges, so they wait until the bridges component has been through that
revision (built, or failed in part: then the VMs on a failed L2 report its error). A component that
`fails_closed` (anti-spoofing) holds those after it until a pass of it at that revision or later
succeeded: while it fails, nothing that relies on it goes ahead.

Failures: an expected one (`HostStackError`, such as every `KvmAgentError`, or a failed command's
`ProcessError`) is logged, counted in `/metrics` and retried with capped backoff; any other
exception is a bug: the actor's task ends with it and the supervisor ends the process.

One resync path: every actor re-applies its view after a jittered `resync_interval` without news,
as a full pass (`resync=True`: the VMs then re-read every domain, not only the changed specs).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentkit.errors import HostStackError
from agentkit.journal import Journal
from agentkit.model import OBSERVED_ERROR_MAX
from agentkit.proc import ProcessError
from agentkit.supervise import Supervisor
from kvmagent.view import HostView

log = logging.getLogger(__name__)
EXPECTED = (HostStackError, ProcessError)
BACKOFF_MAX = 30.0
HELD = "desired"  # the health entry naming the held items (agentkit.model.Held), beside the failing components'


class Component(Protocol):
    name: str
    after: tuple[str, ...]  # components whose pass over a revision comes first
    # optional `fails_closed: bool`: those after it wait for a pass of it that succeeded (default: any pass)

    async def apply(self, view: HostView, *, resync: bool = False) -> None: ...

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

    def __init__(self, components: list[Component], resync_interval: float = 60.0,
                 health: Callable[[dict[str, str]], None] = lambda errors: None):
        names = [c.name for c in components]
        unknown = {d for c in components for d in c.after} - set(names)
        if unknown or len(set(names)) != len(names):
            raise ValueError(f"components {names}: unknown `after` {sorted(unknown)} or a name twice")
        self.components = components
        self.resync_interval = resync_interval
        self.view = HostView()
        self.stats = Stats()
        self.health = health
        self._told: dict[str, str] | None = None  # the failing components as `health` was last told them
        self._dirty = {c.name: asyncio.Event() for c in components}
        self._settled: dict[str, int] = {}  # component -> newest revision it has been through
        self._closed = {c.name for c in components if getattr(c, "fails_closed", False)}
        self._progress = asyncio.Condition()
        self._have_state = False

    async def on_state(self, state: dict[str, object], rev: int) -> None:
        """Link callback: remember the newest whole view; every component's task picks it up."""
        self.view = HostView.from_state(state, rev)
        self._have_state = True
        self.poke()

    def poke(self, *names: str) -> None:
        """Ask the named components (default: every one) to reconcile now (new state, libvirt reconnected,
        a download done)."""
        if self._have_state:
            for name, ev in self._dirty.items():
                if not names or name in names:
                    ev.set()

    def start(self, tasks: Supervisor) -> None:
        """One supervised actor per component."""
        for comp in self.components:
            tasks.start(self._actor(comp), name=f"component {comp.name}")

    async def _actor(self, comp: Component) -> None:
        dirty = self._dirty[comp.name]
        backoff = 0.0
        while True:
            timeout = backoff or self.resync_interval * random.uniform(0.8, 1.2)
            resync = False
            try:
                await asyncio.wait_for(dirty.wait(), timeout)
            except TimeoutError:
                resync = not backoff
            if not self._have_state:
                continue
            dirty.clear()
            view = self.view
            await self._after(comp, view.rev)
            ok = await self.apply_one(comp, view, resync=resync)
            backoff = 0.0 if ok else min(max(backoff * 2, 0.5), BACKOFF_MAX)

    async def _after(self, comp: Component, rev: int) -> None:
        """Wait until every component `comp` comes after has been through revision `rev`."""
        async with self._progress:
            await self._progress.wait_for(lambda: all(self._through(d, rev) for d in comp.after))

    def _through(self, name: str, rev: int) -> bool:
        """Has component `name` been through revision `rev` (and succeeded, if it fails closed)?"""
        passes = self.stats.applied if name in self._closed else self._settled
        return passes.get(name, -1) >= rev

    async def apply_one(self, comp: Component, view: HostView, resync: bool = False) -> bool:
        """Apply `view` to `comp`: True when done; False after an expected failure (retried)."""
        t0 = time.monotonic()
        ok = False
        try:
            await comp.apply(view, resync=resync)
            ok = True
        except EXPECTED as e:  # a component's expected failure must not stop the others; it is retried
            self.stats.errors[comp.name] = self.stats.errors.get(comp.name, 0) + 1
            self.stats.last_error[comp.name] = f"{type(e).__name__}: {e}"
            log.error("reconcile of %s failed: %s", comp.name, e)
        finally:
            self.stats.reconciles += 1
            self.stats.last_seconds[comp.name] = time.monotonic() - t0
        async with self._progress:
            self._settled[comp.name] = view.rev
            if ok:
                self.stats.applied[comp.name] = view.rev
            self._progress.notify_all()
        if ok:
            self.stats.last_error.pop(comp.name, None)
        self._tell_health()
        if not ok:
            return False
        log.debug("%s applied rev %d in %.1f ms", comp.name, view.rev, (time.monotonic() - t0) * 1000)
        self.stats.applied_at = time.time()
        return True

    def retell_health(self) -> None:
        """Tell `health` again, once it was told (the link connected again: the coordinator's copy may be from
        before an etcd restore, or lost to a replica of a release without health reports)."""
        if self._told is not None:
            self._told = None
            self._tell_health()

    def _tell_health(self) -> None:
        """Tell `health` which components fail and why, when that changed (and after the first pass: what the
        coordinator kept from before a restart may be stale)."""
        errors = {name: error[:OBSERVED_ERROR_MAX] for name, error in self.stats.last_error.items()}
        if held := sorted(self.view.held.items()):  # objects this agent cannot read: the operator must know
            errors[HELD] = ("desired items this agent cannot read, left as they are (a coordinator newer than "
                            "this agent?): " + "; ".join(f"{key}: {h.reason}" for key, h in held))[:OBSERVED_ERROR_MAX]
        if errors != self._told:
            self._told = errors
            self.health(errors)

    async def close(self) -> None:
        """Close every component, the last first (best effort: one failure must not keep others open)."""
        for comp in reversed(self.components):
            try:
                await comp.close()
            except Exception:
                log.exception("closing %s failed", comp.name)


class Reporter:
    """The observed-state sink components call: journaled first, uploaded by the link."""

    def __init__(self, journal: Journal):
        self.journal = journal

    def __call__(self, kind: str, ident: str, body: dict[str, Any]) -> None:
        self.journal.append(kind, ident, body)
