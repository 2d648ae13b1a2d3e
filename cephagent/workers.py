"""Worker threads for the cephagent's blocking librados/librbd calls, apart by how long a call takes.

A call holds its thread until Ceph answers, and a flatten, a rollback, a shrink or the removal of a large image
takes minutes. On one pool (asyncio's default, min(32, CPUs + 4) threads) a handful of them stalled `/health` and
the reads the coordinator polls, which then showed the host Disconnected. So `quick` calls (each bounded by the
`timeout` setting) keep the default pool; `long` ones get `long_operations` threads, and those beyond that wait
their turn (queued, not refused: the coordinator's volume calls are plain requests it does not retry); an
import's calls get a pool of `import_concurrency` threads, one per running import, which holds at most one at a
time: its writes never wait for a thread (the time would count against its source's pace, `read_timeout`).

The calls count themselves per kind, waiting for a thread (`queued`) and holding one (`busy`), for /metrics: the
loop's default pool shows neither, and a scrape reads the counts without asking any pool or Ceph.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar, get_args

from agentkit.metrics import LabelValues, Registry

T = TypeVar("T")
Kind = Literal["quick", "long", "import"]
KINDS: tuple[Kind, ...] = get_args(Kind)


class Workers:
    def __init__(self, long_operations: int, imports: int):
        self._pools: dict[Kind, ThreadPoolExecutor | None] = {
            "quick": None,  # the loop's default executor
            "long": ThreadPoolExecutor(long_operations, thread_name_prefix="ceph-long"),
            "import": ThreadPoolExecutor(imports, thread_name_prefix="ceph-import"),
        }
        self._lock = threading.Lock()  # the counts change in the loop and in the worker threads
        self.queued: dict[Kind, int] = dict.fromkeys(KINDS, 0)
        self.busy: dict[Kind, int] = dict.fromkeys(KINDS, 0)

    async def run(self, kind: Kind, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on `kind`'s threads; cancelled while it waits for one, it never runs."""
        waiting = [True]  # until its thread takes it, or its caller stops waiting: whichever comes first counts
        with self._lock:
            self.queued[kind] += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pools[kind], self._counted, kind, waiting,
                                                                    fn, args)
        finally:
            self._taken(kind, waiting)

    def _counted(self, kind: Kind, waiting: list[bool], fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        self._taken(kind, waiting)
        with self._lock:
            self.busy[kind] += 1
        try:
            return fn(*args)
        finally:
            with self._lock:
                self.busy[kind] -= 1

    def _taken(self, kind: Kind, waiting: list[bool]) -> None:
        """The call waits no more (once per call, whoever comes first: a cancelled caller, or its thread)."""
        with self._lock:
            if waiting[0]:
                waiting[0] = False
                self.queued[kind] -= 1

    def register(self, registry: Registry) -> None:
        """The counts as series of `registry`, read when scraped."""
        def per_kind(counts: dict[Kind, int]) -> Callable[[], list[tuple[LabelValues, float]]]:
            return lambda: [((k,), counts[k]) for k in KINDS]
        registry.gauge("hoststack_ceph_workers_busy", "librados/librbd calls holding a worker thread, by kind "
                       "(quick: reads, creates, /health; long: flattens, rollbacks, resizes, deletes; import)",
                       per_kind(self.busy), ("kind",))
        registry.gauge("hoststack_ceph_workers_queued", "librados/librbd calls waiting for a worker thread, by kind",
                       per_kind(self.queued), ("kind",))

    def close(self) -> None:
        """Wait for the calls under way (cancelled imports already waited for theirs); drop the queued ones."""
        for pool in self._pools.values():
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
