"""What each host stream is sent, rendered from the watch cache: a snapshot, the diff that resumes an
agent from its revision, and the lines of one revision for every host it concerns.

A revision's line is encoded once per distinct content, not once per host: every host that gets the
same parts (all of them, for a cluster-wide change) shares one `bytes`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator

from coordinator.domain import hostview
from coordinator.etcd.keys import Scope
from coordinator.fanout.history import History
from coordinator.fanout.state import Delta, DesiredState, Items, Part


def snapshot(state: DesiredState, host: str) -> bytes:
    return hostview.line(hostview.snapshot(state.rev, state.view(host), state.timeline))


def _line(rev: int, parts: Iterable[Part]) -> bytes | None:
    puts: Items = {}
    deletes: list[str] = []
    for part in parts:  # a stream key belongs to one part
        puts.update(part.puts)
        deletes.extend(part.deletes)
    if not puts and not deletes:
        return None
    return hostview.line(hostview.changes(rev, puts, deletes))


def route(delta: Delta, state: DesiredState, subscribed: Collection[str]) -> Iterator[tuple[str, bytes]]:
    """(host, line) for every subscribed host the revision concerns."""
    if delta.common:
        targets: Iterable[str] = subscribed
    else:
        targets = {h for h in delta.hosts if h in subscribed}
        targets.update(h for l3 in delta.l3s for h in state.members.get(l3, ()) if h in subscribed)
    shared: dict[tuple[str, ...], bytes | None] = {}
    for host in targets:
        has, gained = state.host_l3s(host), delta.gained.get(host, ())
        l3s = tuple(l3 for l3 in delta.l3s if l3 in has and l3 not in gained)
        own = delta.hosts.get(host)
        if own is None:
            if l3s not in shared:
                shared[l3s] = _line(delta.rev, [delta.common, *(delta.l3s[l3] for l3 in l3s)])
            data = shared[l3s]
        else:
            data = _line(delta.rev, [delta.common, *(delta.l3s[l3] for l3 in l3s), own])
        if data is not None:
            yield host, data


def resume(state: DesiredState, history: History, host: str, since: int) -> bytes | None:
    """One `changes` line taking the host's view from `since` (covered by `history`) to now; None when
    nothing in it changed. Items are read from the state, so each appears once, however often it changed."""
    common: dict[str, None] = {}  # ordered sets of the touched keys
    own: dict[str, None] = {}
    per_l3: dict[str, dict[str, None]] = {}
    vms = dict(state.vm_l3s(host))  # becomes: the L3s each VM gave the host at `since`
    for t in history.after(since):
        if t.scope is Scope.ALL:
            common[t.key] = None
        elif t.scope is Scope.L3:
            per_l3.setdefault(t.owner, {})[t.key] = None
        elif t.owner == host:
            if t.l3s_before is not None and t.key not in own:
                vms[t.key] = t.l3s_before
            own[t.key] = None
    was, now = frozenset().union(*vms.values()), frozenset(state.host_l3s(host))
    part = Part()
    _refresh(part, common, state.common)
    _refresh(part, own, state.hosts.get(host, {}))
    for l3, touched in per_l3.items():
        if l3 in was and l3 in now:
            _refresh(part, touched, state.l3s.get(l3, {}))
    for l3 in was - now:
        for key in [*state.l3s.get(l3, ()), *per_l3.get(l3, ())]:
            part.delete(key)
    for l3 in now - was:
        for key, value in state.l3s.get(l3, {}).items():
            part.put(key, value)
    return _line(state.rev, [part])


def _refresh(part: Part, touched: Iterable[str], items: Items) -> None:
    """Each touched key: its value now, or its delete."""
    for key in touched:
        if key in items:
            part.put(key, items[key])
        else:
            part.delete(key)
