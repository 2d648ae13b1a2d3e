"""Who leads among coordinator replicas, sampled over time: the gaps without a leader after a fault."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp

from coordinator.client import ApiClientError, Client
from testbed.coordinators import Coordinator


class Leadership:
    """Asks every replica's `/health` every `period` seconds; a replica that does not answer does not lead."""

    def __init__(self, replicas: list[Coordinator], token: str, period: float = 0.05):
        self.replicas, self.token, self.period = replicas, token, period
        self.samples: list[tuple[float, bool]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Leadership:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            leads = [await self._leads(c) for c in self.replicas]
            self.samples.append((time.monotonic(), any(leads)))
            await asyncio.sleep(self.period)

    async def _leads(self, c: Coordinator) -> bool:
        try:
            async with Client(c.url, self.token, timeout=1) as api:
                return bool((await api.get("/health"))["leader"])
        except (aiohttp.ClientError, ApiClientError, TimeoutError):
            return False

    async def leading_again(self, timeout: float) -> None:
        """Until a sample says some replica leads (AssertionError after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        start = len(self.samples)
        while not any(leading for _, leading in self.samples[start:]):
            assert time.monotonic() < deadline, f"no replica leads within {timeout} s"
            await asyncio.sleep(self.period)

    def longest_gap_after(self, t0: float) -> float:
        """The longest time after `t0` in which no replica led (it must lead at the end)."""
        gap, since = 0.0, None
        for t, leading in self.samples:
            if t < t0:
                continue
            if not leading and since is None:
                since = t
            elif leading and since is not None:
                gap, since = max(gap, t - since), None
        assert since is None, "no replica leads at the end"
        return gap
