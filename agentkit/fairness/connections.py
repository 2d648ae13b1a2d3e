"""Which guest connections a service keeps: a cap per source and one for all, the idlest making room.

A new connection is always admitted; when its source already holds `per_source`, that source's least
recently active connection is closed, and when the table holds `total`, the least recently active
connection of the source holding the most is. So a guest that opens connections without end only
recycles its own, and a VM that opens one is served whatever others hold (nginx's `limit_conn` refuses
the newcomer instead, which lets the first to grab the slots keep them).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar


class Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


class ConnectionTable(Generic[C]):
    """Connections by source, each source's in order of last activity (oldest first)."""

    def __init__(self, total: int, per_source: int):
        self.total = max(1, total)
        self.per_source = max(1, per_source)
        self.evicted = 0
        self._by_source: dict[Hashable, OrderedDict[C, None]] = {}
        self._source: dict[C, Hashable] = {}

    def __len__(self) -> int:
        return len(self._source)

    def held_by(self, source: Hashable) -> int:
        return len(self._by_source.get(source, ()))

    def admit(self, source: Hashable, conn: C) -> list[C]:
        """Record `conn`; returns the connections to close to make room (already forgotten here)."""
        victims = []
        mine = self._by_source.get(source)
        if mine is not None and len(mine) >= self.per_source:
            victims.append(next(iter(mine)))
        elif len(self._source) >= self.total:
            heaviest = self._heaviest()
            victims.append(next(iter(heaviest)))
        for victim in victims:
            self.remove(victim)
        self._by_source.setdefault(source, OrderedDict())[conn] = None
        self._source[conn] = source
        self.evicted += len(victims)
        return victims

    def touch(self, conn: C) -> None:
        """`conn` was just active: the last of its source to be evicted."""
        source = self._source.get(conn)
        if source is not None:
            self._by_source[source].move_to_end(conn)

    def remove(self, conn: C) -> None:
        source = self._source.pop(conn, None)
        if source is None:
            return
        mine = self._by_source[source]
        del mine[conn]
        if not mine:
            del self._by_source[source]

    def _heaviest(self) -> OrderedDict[C, None]:
        return max(self._by_source.values(), key=lambda conns: len(conns))

    def shed(self, count: int) -> list[C]:
        """Forget up to `count` connections of the heaviest sources (out of descriptors); the caller closes them."""
        out: list[C] = []
        while self._source and len(out) < count:
            victim = next(iter(self._heaviest()))
            self.remove(victim)
            out.append(victim)
        self.evicted += len(out)
        return out
