"""Log lines a guest can cause, bounded: at most `burst` per cause in each `interval`.

A guest's packets must never turn into a log line each (one flood wrote 1.3 million lines in 40 s).
Lines are keyed by their cause (say, the message and the L3); past the burst they are counted, and the
first line of the cause after the interval carries `suppressed`: how many were left out meanwhile. The
causes remembered are bounded too; when the table is full, quiet causes are forgotten first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

_MAX_CAUSES = 1024


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, interval: float = 10.0, burst: int = 5,
                 clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.interval = interval
        self.burst = burst
        self.suppressed_total = 0
        self._clock = clock
        self._causes: dict[Hashable, list[float]] = {}  # cause -> [window start, lines, suppressed]

    def log(self, level: int, cause: Hashable, msg: str, *args: object, fields: dict[str, Any] | None = None,
            exc_info: bool = False) -> None:
        """Log `msg % args` with `fields` unless `cause` has had its burst in this interval."""
        if not self.logger.isEnabledFor(level):
            return
        now = self._clock()
        state = self._state(cause, now)
        if state[1] >= self.burst:
            state[2] += 1
            self.suppressed_total += 1
            return
        state[1] += 1
        extra = dict(fields or {})
        if state[2]:
            extra["suppressed"] = int(state[2])
            state[2] = 0
        self.logger.log(level, msg, *args, extra={"fields": extra}, exc_info=exc_info)

    def _state(self, cause: Hashable, now: float) -> list[float]:
        state = self._causes.get(cause)
        if state is not None and now - state[0] >= self.interval:
            state[0], state[1] = now, 0
        if state is None:
            if len(self._causes) >= _MAX_CAUSES:
                self._forget(now)
            state = self._causes[cause] = [now, 0, 0]
        return state

    def _forget(self, now: float) -> None:
        quiet = [c for c, s in self._causes.items() if now - s[0] >= self.interval and not s[2]]
        for c in quiet or list(self._causes)[: _MAX_CAUSES // 2]:
            del self._causes[c]
