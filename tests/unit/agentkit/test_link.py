"""The link against a stand-in coordinator on loopback: stream lines of any size, uploads that back off.

Against real coordinators and etcd: tests/functional/agentkit/test_link.py.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agentkit.journal import Journal
from agentkit.link import Link, LinkError, lines
from agentkit.model import HostFacts

BIG = "x" * (600 * 1024)  # one user-data tag of 600 KiB: past aiohttp's 512 KiB readline limit


class Chunks:
    """A stream that hands out the given chunks (what `readany` returns as data arrives)."""

    def __init__(self, *chunks: bytes):
        self.chunks = list(chunks)

    async def readany(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


async def collect(content: Chunks, limit: int) -> list[bytes]:
    return [line async for line in lines(content, limit)]  # type: ignore[arg-type]


async def test_lines_of_any_size_across_chunks():
    big = b"y" * 3_000_000
    got = await collect(Chunks(b'{"a":1}\n{"b"', b":2}\n" + big[:1000], big[1000:] + b"\n", b"cut"), 2**22)
    assert got == [b'{"a":1}', b'{"b":2}', big]  # a last line without its newline is the stream cut: dropped
    with pytest.raises(LinkError, match="exceeds 1000 bytes"):
        await collect(Chunks(b"z" * 600, b"z" * 600, b"\n"), 1000)


class Coordinator:
    """Just enough of the agent API: a snapshot with one large item, and acknowledgements it counts."""

    def __init__(self) -> None:
        self.posts: list[float] = []
        app = web.Application()
        app.router.add_post("/v1/hosts/h1/connect", self.connect)
        app.router.add_post("/v1/hosts/h1/heartbeat", self.connect)
        app.router.add_get("/v1/hosts/h1/stream", self.stream)
        app.router.add_post("/v1/hosts/h1/observed", self.observed)
        self.server = TestServer(app, host="127.0.0.1")

    async def connect(self, request: web.Request) -> web.Response:
        return web.json_response({"heartbeat_interval": 0.5})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        snapshot = {"type": "snapshot", "rev": 7, "items": {"config/userdata-like": BIG}}
        await resp.write(json.dumps(snapshot).encode() + b"\n")
        await asyncio.sleep(3600)
        return resp

    async def observed(self, request: web.Request) -> web.Response:
        self.posts.append(time.monotonic())
        events = (await request.json())["events"]
        return web.json_response({"acked": max(e["seq"] for e in events)})


@pytest.fixture
async def coordinator():
    c = Coordinator()
    await c.server.start_server()
    yield c
    await c.server.close()


async def test_a_large_snapshot_line_is_applied_and_a_failing_ack_backs_off(coordinator, tmp_path):
    journal = Journal(tmp_path)
    states: list[tuple[dict, int]] = []

    async def on_state(state: dict, rev: int) -> None:
        states.append((dict(state), rev))

    link = Link(str(coordinator.server.make_url("/")), "h1", "token-1234", journal, HostFacts, on_state)
    tasks = [asyncio.create_task(link.run()), asyncio.create_task(journal.run())]
    try:
        for _ in range(200):
            if states:
                break
            await asyncio.sleep(0.02)
        assert states and states[0] == ({"config/userdata-like": BIG}, 7)
        journal.acked_path.with_suffix(".tmp").mkdir()  # the acknowledgement cannot be recorded
        for i in range(500):
            journal.append("lease", f"nic-{i}", {"state": "bound"})
        await asyncio.sleep(2.0)
        assert 1 <= len(coordinator.posts) <= 4, f"{len(coordinator.posts)} uploads in 2 s: not backing off"
        assert journal.acked == 0 and len(journal.pending) == 500
        journal.acked_path.with_suffix(".tmp").rmdir()
        for _ in range(500):
            if not journal.pending:
                break
            await asyncio.sleep(0.02)
        assert journal.pending == [] and journal.acked == 500
        assert all(not t.done() for t in tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
