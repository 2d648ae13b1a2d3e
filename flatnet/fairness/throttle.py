"""Connections whose source is over its request rate wait in line, one timer per source.

A guest with hundreds of connections over its rate must not cost the loop a timer per connection per
token (that spun one core at 70 %): its connections queue up in the order they ran out, and one timer
per source wakes the first of them once a few tokens have come in (`MIN_PAUSE`). The woken connection
serves what the tokens allow and, still over the rate, queues again at the end of the line.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from agentkit.buckets import TokenBuckets

C = TypeVar("C", bound=Hashable)
MIN_PAUSE = 0.01  # seconds: at 1,024 requests/s, ten requests come in meanwhile


class Throttle(Generic[C]):
    """`admit(source, conn)`: True to serve one request of `conn` now; False when it now waits in line and
    `resume(conn)` is called when its turn comes. `forget(conn)` when it closes."""

    def __init__(self, buckets: TokenBuckets, resume: Callable[[C], None]):
        self.buckets = buckets
        self.parked = 0  # times a connection went to wait
        self._resume = resume
        self._lines: dict[Hashable, OrderedDict[C, None]] = {}
        self._source: dict[C, Hashable] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}

    def admit(self, source: Hashable, conn: C) -> bool:
        if conn in self._source:
            return False
        if self.buckets.take(source):
            return True
        self.parked += 1
        self._lines.setdefault(source, OrderedDict())[conn] = None
        self._source[conn] = source
        if source not in self._timers:
            self._schedule(source)
        return False

    def forget(self, conn: C) -> None:
        source = self._source.pop(conn, None)
        if source is None:
            return
        line = self._lines[source]
        del line[conn]
        if not line:
            del self._lines[source]
            self._timers.pop(source).cancel()

    def _schedule(self, source: Hashable) -> None:
        delay = max(MIN_PAUSE, self.buckets.wait(source))
        self._timers[source] = asyncio.get_running_loop().call_later(delay, self._next, source)

    def _next(self, source: Hashable) -> None:
        del self._timers[source]
        line = self._lines[source]
        conn, _ = line.popitem(last=False)
        del self._source[conn]
        if line:
            self._schedule(source)
        else:
            del self._lines[source]
        self._resume(conn)
