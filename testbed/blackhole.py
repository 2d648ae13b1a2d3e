"""A loopback TCP relay that can silently drop one direction: a lost request or a lost answer.

Runs in the test's event loop. `drop_requests` swallows what clients send (the server never sees the
request, the client waits); `drop_answers` swallows what the server sends back (the server acts, the
client never learns it did). Both are the failures a store driver cannot tell apart from the outside.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from testbed.ports import free_port


class Blackhole:
    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.port = free_port()
        self.drop_requests = False
        self.drop_answers = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> Blackhole:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        pumps = [asyncio.create_task(self._pump(reader, up_writer, lambda: self.drop_requests)),
                 asyncio.create_task(self._pump(up_reader, writer, lambda: self.drop_answers))]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in pumps:
                p.cancel()
                self._tasks.discard(p)
            for w in (writer, up_writer):
                w.close()

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, dropping: Callable[[], bool]) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                if not dropping():
                    dst.write(data)
                    await dst.drain()
