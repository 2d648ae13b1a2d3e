"""Worker threads for the cephagent's blocking librados/librbd calls, apart by how long a call takes.

A call holds its thread until Ceph answers, and a flatten, a rollback, a shrink or the removal of a large image
takes minutes. On one pool (asyncio's default, min(32, CPUs + 4) threads) a handful of them stalled `/health` and
the reads the coordinator polls, which then showed the host Disconnected. So `quick` calls (each bounded by the
`timeout` setting) keep the default pool; `long` ones get `long_operations` threads, and those beyond that wait
their turn (queued, not refused: the coordinator's volume calls are plain requests it does not retry); an
import's calls get a pool of `import_concurrency` threads, one per running import, which holds at most one at a
time: its writes never wait for a thread (the time would count against its source's pace, `read_timeout`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

T = TypeVar("T")
Kind = Literal["quick", "long", "import"]


class Workers:
    def __init__(self, long_operations: int, imports: int):
        self._pools: dict[Kind, ThreadPoolExecutor | None] = {
            "quick": None,  # the loop's default executor
            "long": ThreadPoolExecutor(long_operations, thread_name_prefix="ceph-long"),
            "import": ThreadPoolExecutor(imports, thread_name_prefix="ceph-import"),
        }

    async def run(self, kind: Kind, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on `kind`'s threads; cancelled while it waits for one, it never runs."""
        return await asyncio.get_running_loop().run_in_executor(self._pools[kind], fn, *args)

    def close(self) -> None:
        """Wait for the calls under way (cancelled imports already waited for theirs); drop the queued ones."""
        for pool in self._pools.values():
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
