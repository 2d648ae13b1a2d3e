"""The watch cache's memory: the desired state of every host at one revision, indexed for routing.

Items are kept by scope (`keys.scope`): cluster-wide, per host, per L3 network. Each VM gives its host a
set of L3 networks (`hostview.vm_l3s`); they are counted, so a VM that leaves takes an L3 away only when
no other VM of the host still has it. `apply` takes one revision's changes and returns a `Delta`: what
each audience must be told, including the per-L3 items a host gains or loses with its VMs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import KeysView
from dataclasses import dataclass, field

from coordinator.domain import hostview
from coordinator.etcd import keys
from coordinator.etcd.keys import Scope
from coordinator.etcd.store import Change, Entry

Items = dict[str, object]  # stream key -> value
_ABSENT = object()


class Part:
    """The puts and deletes one audience gets for one revision (a stream key is in at most one)."""

    __slots__ = ("puts", "deletes")

    def __init__(self) -> None:
        self.puts: Items = {}
        self.deletes: dict[str, None] = {}  # an ordered set

    def put(self, key: str, value: object) -> None:
        self.deletes.pop(key, None)
        self.puts[key] = value

    def delete(self, key: str) -> None:
        self.puts.pop(key, None)
        self.deletes[key] = None

    def __bool__(self) -> bool:
        return bool(self.puts) or bool(self.deletes)


@dataclass(frozen=True)
class Touch:
    """One changed item as history keeps it; for a VM, the L3s it gave its host before the change."""

    scope: Scope
    owner: str
    key: str
    l3s_before: frozenset[str] | None = None


@dataclass
class Delta:
    """One revision, by audience."""

    rev: int
    common: Part = field(default_factory=Part)
    hosts: dict[str, Part] = field(default_factory=dict)  # own items, and items of L3s gained or lost
    l3s: dict[str, Part] = field(default_factory=dict)  # for the hosts that have the L3 before and after
    gained: dict[str, frozenset[str]] = field(default_factory=dict)  # host -> L3s it gained (sent whole)
    touches: list[Touch] = field(default_factory=list)


class DesiredState:
    def __init__(self, timeline: str = "") -> None:
        self.timeline = timeline  # of the data this state is of (coordinator/etcd/timeline.py)
        self.rev = 0
        self.common: Items = {}
        self.hosts: dict[str, Items] = {}
        self.l3s: dict[str, Items] = {}
        self.members: dict[str, set[str]] = {}  # L3 -> the hosts that have it
        self._vm_l3s: dict[str, dict[str, frozenset[str]]] = {}  # host -> VM stream key -> its L3s
        self._counts: dict[str, Counter[str]] = {}  # host -> L3 -> how many of its VMs have it

    def host_l3s(self, host: str) -> KeysView[str]:
        return (self._counts.get(host) or Counter()).keys()

    def vm_l3s(self, host: str) -> dict[str, frozenset[str]]:
        return self._vm_l3s.get(host, {})

    def view(self, host: str) -> Items:
        """The host's whole view (hostview)."""
        items = dict(self.common)
        items.update(self.hosts.get(host, {}))
        for l3 in self.host_l3s(host):
            items.update(self.l3s.get(l3, {}))
        return items

    def diff(self, listed: list[Entry], rev: int) -> list[Change]:
        """The changes that take this state to a listing of the desired-state prefix."""
        current = {keys.desired_all(k): v for k, v in self.common.items()}
        for items in self.l3s.values():
            current.update((keys.desired_all(k), v) for k, v in items.items())
        for host, items in self.hosts.items():
            current.update((keys.desired_for(host, k), v) for k, v in items.items())
        out = [Change(e.key, e.value, rev) for e in listed if current.get(e.key, _ABSENT) != e.value]
        seen = {e.key for e in listed}
        return out + [Change(k, None, rev) for k in current if k not in seen]

    def apply(self, batch: list[Change], rev: int) -> Delta:
        delta = Delta(rev)
        before: dict[str, frozenset[str]] = {}  # hosts whose VMs changed: their L3s before this revision
        for ch in batch:
            where = keys.scope(ch.key)
            if where is None:
                continue
            scope, owner, key = where
            l3s_before = None
            if scope is Scope.ALL:
                items, part = self.common, delta.common
            elif scope is Scope.HOST:
                items, part = self.hosts.setdefault(owner, {}), delta.hosts.setdefault(owner, Part())
                if key.startswith("vm/"):
                    if owner not in before:
                        before[owner] = frozenset(self.host_l3s(owner))
                    l3s_before = self._set_vm(owner, key, hostview.vm_l3s(ch.value))
            else:
                items, part = self.l3s.setdefault(owner, {}), delta.l3s.setdefault(owner, Part())
            delta.touches.append(Touch(scope, owner, key, l3s_before))
            if ch.value is None:
                items.pop(key, None)
                part.delete(key)
            else:
                items[key] = ch.value
                part.put(key, ch.value)
        for host, was in before.items():
            self._moved(delta, host, was)
        self._drop_empty(delta)
        self.rev = rev
        return delta

    def _set_vm(self, host: str, key: str, l3s: frozenset[str]) -> frozenset[str]:
        """Record the L3s a VM gives its host; the ones it gave before."""
        vms = self._vm_l3s.setdefault(host, {})
        old = vms.pop(key, frozenset())
        if l3s:
            vms[key] = l3s
        counts = self._counts.setdefault(host, Counter())
        for l3 in old - l3s:
            counts[l3] -= 1
            if not counts[l3]:
                del counts[l3]
                self.members[l3].discard(host)
                if not self.members[l3]:
                    del self.members[l3]
        for l3 in l3s - old:
            counts[l3] += 1
            if counts[l3] == 1:
                self.members.setdefault(l3, set()).add(host)
        return old

    def _moved(self, delta: Delta, host: str, was: frozenset[str]) -> None:
        """A host that gained an L3 gets its items whole; one that lost it, their deletes."""
        now = frozenset(self.host_l3s(host))
        part = delta.hosts[host]
        for l3 in was - now:
            for key in self.l3s.get(l3, ()):
                part.delete(key)
            for key in delta.l3s[l3].deletes if l3 in delta.l3s else ():
                part.delete(key)
        for l3 in now - was:
            for key, value in self.l3s.get(l3, {}).items():
                part.put(key, value)
        if now - was:
            delta.gained[host] = now - was

    def _drop_empty(self, delta: Delta) -> None:
        """Forget hosts and L3s left without items (a deleted host's or L3's entries go too)."""
        for host in delta.hosts:
            for per_host in (self.hosts, self._vm_l3s, self._counts):
                if host in per_host and not per_host[host]:
                    del per_host[host]
        for l3 in delta.l3s:
            if l3 in self.l3s and not self.l3s[l3]:
                del self.l3s[l3]
