"""The recent revisions of the desired state, so that a resuming agent is told only what changed.

A bounded window of `Touch`es (which items each revision changed, not their values: those are read
from the state when the agent resumes). `covers(since)`: every revision after `since` is still in
the window; older revisions get a snapshot instead.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from coordinator.fanout.state import Touch


class History:
    def __init__(self, capacity: int):
        self.capacity = capacity  # touches kept; the window shrinks to 3/4 of it when full
        self.start = 0
        self._revs: list[int] = []
        self._touches: list[list[Touch]] = []
        self._size = 0

    def reset(self, rev: int) -> None:
        """Forget everything: only agents at `rev` or later can resume."""
        self.start = rev
        self._revs.clear()
        self._touches.clear()
        self._size = 0

    def add(self, rev: int, touches: list[Touch]) -> None:
        self._revs.append(rev)
        self._touches.append(touches)
        self._size += len(touches)
        if self._size <= self.capacity:
            return
        drop = 0
        while self._size > self.capacity * 3 // 4 and drop < len(self._revs) - 1:
            self._size -= len(self._touches[drop])
            drop += 1
        if drop:
            self.start = self._revs[drop - 1]
            del self._revs[:drop], self._touches[:drop]

    def covers(self, since: int) -> bool:
        return since >= self.start

    def after(self, since: int) -> Iterator[Touch]:
        """The touches of every revision after `since`, oldest first."""
        for touches in self._touches[bisect.bisect_right(self._revs, since):]:
            yield from touches
