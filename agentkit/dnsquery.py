"""One DNS exchange with a server, over UDP or TCP (RFC 1035 §4.2): bytes of a query in, bytes of the
answer out. Callers bound it with their own timeout; a refused or unreachable server raises OSError."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

LENGTH = struct.Struct("!H")  # the 2-byte length before each message on TCP


class _OneShot(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def ask_udp(server: str, port: int, data: bytes) -> bytes:
    transport, proto = await asyncio.get_running_loop().create_datagram_endpoint(
        _OneShot, remote_addr=(server, port))
    try:
        transport.sendto(data)
        return await proto.answer
    finally:
        transport.close()


async def ask_tcp(server: str, port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(server, port)
    try:
        writer.write(LENGTH.pack(len(data)) + data)
        (size,) = LENGTH.unpack(await reader.readexactly(2))
        return await reader.readexactly(size)
    finally:
        writer.close()
