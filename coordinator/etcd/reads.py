"""Point reads asked for together go to etcd as one request.

An API request reads a key or two, and under load many wait on etcd at once; each etcd request costs far
more than each key in it (a gRPC call and, with TLS and auth, its records and its token check: `bench/run
tls`). So the reads asked for in one turn of the event loop leave as one read-only transaction, each
caller's keys read at one revision. A read alone waits no longer than it did (its batch leaves on the
next turn); a batch that fails fails each of its callers as its own request would have. Nothing is cached:
every read is answered by etcd after it was asked, as linearizable as a read of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

MAX_OPS = 128  # etcd's default --max-txn-ops; one caller's keys are never split between requests
Waiting = tuple[list[Any], "asyncio.Future[list[Any]]"]  # a caller's RangeRequests, its answers


class ReadBatch:
    def __init__(self, send: Callable[[list[Any]], Awaitable[list[Any]]]):
        """`send(ranges)`: the RangeResponses to RangeRequests, in order, read at one revision."""
        self._send = send
        self._waiting: list[Waiting] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def read(self, ranges: list[Any]) -> list[Any]:
        """The RangeResponse to each of `ranges`."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[list[Any]] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append((ranges, answer))
        return await answer

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        batch: list[Waiting] = []
        ops = 0
        for item in waiting:
            if batch and ops + len(item[0]) > MAX_OPS:
                self._start(batch)
                batch, ops = [], 0
            batch.append(item)
            ops += len(item[0])
        self._start(batch)

    def _start(self, batch: list[Waiting]) -> None:
        task = asyncio.create_task(self._one(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _one(self, batch: list[Waiting]) -> None:
        try:
            found = await self._send([r for ranges, _ in batch for r in ranges])
        except asyncio.CancelledError:
            for _, answer in batch:
                answer.cancel()
            raise
        except Exception as e:  # each caller raises it, as from a request of its own
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(e)
            return
        start = 0
        for ranges, answer in batch:
            if not answer.done():  # its caller may have been cancelled meanwhile
                answer.set_result(found[start:start + len(ranges)])
            start += len(ranges)
