"""Token buckets per key (a source address, a MAC): at most `rate` events a second, `burst` at once.

The table of buckets is bounded: a full bucket is the same as no bucket, so full ones are dropped when
the table is at `max_keys`; if every bucket is in use, new keys share one overflow bucket (a guest that
invents sources only competes with itself and with other inventors).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

_OVERFLOW = object()


class TokenBuckets:
    """`take(key)` is True while `key` has a token; `rate <= 0` means no limit."""

    def __init__(self, rate: float, burst: float | None = None, max_keys: int = 4096,
                 clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[Hashable, list[float]] = {}  # key -> [tokens, stamp]

    @property
    def keys(self) -> int:
        return len(self._buckets)

    def take(self, key: Hashable) -> bool:
        if self.rate <= 0:
            return True
        now = self._clock()
        bucket = self._bucket(key, now)
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True

    def give(self, key: Hashable) -> None:
        """Give back the token a `take(key)` took: what it was taken for turned out not to count (a budget of
        failures takes before it tries, so that many tries at once cannot all pass, and gives back on success)."""
        bucket = self._buckets.get(key) or self._buckets.get(_OVERFLOW)
        if self.rate > 0 and bucket is not None:
            bucket[0] = min(self.burst, bucket[0] + 1.0)

    def wait(self, key: Hashable) -> float:
        """Seconds until `key` has a token again (0 when it has one)."""
        bucket = self._buckets.get(key) or self._buckets.get(_OVERFLOW)
        if self.rate <= 0 or bucket is None:
            return 0.0
        tokens = bucket[0] + (self._clock() - bucket[1]) * self.rate
        return max(0.0, (1.0 - tokens) / self.rate)

    def _bucket(self, key: Hashable, now: float) -> list[float]:
        bucket = self._buckets.get(key)
        if bucket is not None:
            return bucket
        if len(self._buckets) >= self.max_keys:
            self._prune(now)
            if len(self._buckets) >= self.max_keys:
                key = _OVERFLOW
                bucket = self._buckets.get(key)
                if bucket is not None:
                    return bucket
        bucket = self._buckets[key] = [self.burst, now]
        return bucket

    def _prune(self, now: float) -> None:
        full = [k for k, (tokens, stamp) in self._buckets.items()
                if tokens + (now - stamp) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]
