"""The store with every etcd request timed and every failure counted, for the coordinator's `/metrics`.

Latency as this replica sees it (network, failover and etcd together): what an operator alerts on before
the API slows down. Watches are long-lived and not timed; a backup is timed whole by `hs-ctl`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from agentkit.metrics import Registry
from coordinator.etcd.store import Entries, Entry, Store, StoreUnavailable, Txn


class MeteredStore(Store):
    def __init__(self, *args: Any, metrics: Registry, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.latency = metrics.histogram("hoststack_etcd_request_seconds", "etcd requests of this replica by kind",
                                         ("op",))
        self.failures = metrics.counter("hoststack_etcd_failures_total", "etcd requests that failed (503s)",
                                        ("op",))

    @contextlib.contextmanager
    def _timed(self, op: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        except StoreUnavailable:
            self.failures.inc(op)
            raise
        finally:
            self.latency.observe(time.monotonic() - t0, op)

    async def get(self, key: str) -> Entry | None:
        with self._timed("get"):
            return await super().get(key)

    async def get_many(self, keys: list[str]) -> list[Entry | None]:
        with self._timed("get"):
            return await super().get_many(keys)

    async def snapshot(self, prefixes: list[str], keys_only: bool = False) -> tuple[dict[str, Entries], int]:
        with self._timed("range"):
            return await super().snapshot(prefixes, keys_only)

    async def count(self, prefix: str) -> int:
        with self._timed("count"):
            return await super().count(prefix)

    async def revision(self) -> int:
        with self._timed("count"):
            return await super().revision()

    async def commit(self, txn: Txn) -> int | None:
        with self._timed("txn"):
            return await super().commit(txn)

    async def grant(self, ttl: int) -> int:
        with self._timed("lease"):
            return await super().grant(ttl)

    async def refresh(self, lease_id: int) -> bool:
        with self._timed("lease"):
            return await super().refresh(lease_id)
