"""Stand-in image stores on loopback addresses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

StandIn = Callable[[str, web.Application], Awaitable[int]]


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    """stand_in(address, app): serve `app` at `address` as a stand-in image store; its port (the first one
    started picks it, the others take the same)."""
    runners: list[web.AppRunner] = []

    async def start(address: str, app: web.Application) -> int:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, address, int(runners[0].addresses[0][1]) if runners else 0).start()
        runners.append(runner)
        return int(runner.addresses[0][1])

    yield start
    for r in runners:
        await r.cleanup()
