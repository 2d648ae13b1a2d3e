"""A minimal RFB (VNC) client, enough to see a guest's screen through a console path: RFC 6143 handshake
(3.8, security None), 32-bit true colour, Raw encoding, framebuffer update requests.

It reads from a `ByteSource` so the same client runs over a unix socket (qemu's VNC directly), our console
proxy's websocket, or websockify's. Pixels come back as RGB bytes, comparable with qemu's screendump.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Protocol

import aiohttp

RAW = 0
PIXEL_FORMAT = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)  # little-endian BGRX


class ByteSource(Protocol):
    async def readexactly(self, n: int) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class SocketSource:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def unix(cls, path: str) -> SocketSource:
        return cls(*await asyncio.open_unix_connection(path, limit=1 << 20))

    async def readexactly(self, n: int) -> bytes:
        return await self.reader.readexactly(n)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()


class WsSource:
    """A websocket of binary messages read as one byte stream."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.buf = bytearray()
        self.received = 0

    async def readexactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            msg = await self.ws.receive()
            if msg.type is not aiohttp.WSMsgType.BINARY:
                raise EOFError(f"websocket ended: {msg.type.name} {msg.data} {msg.extra}")
            self.buf += msg.data
            self.received += len(msg.data)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def write(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def close(self) -> None:
        await self.ws.close()


@dataclass
class Screen:
    width: int
    height: int
    name: str
    pixels: bytearray  # RGB, row-major

    def rgb(self) -> bytes:
        return bytes(self.pixels)


class RfbClient:
    def __init__(self, src: ByteSource):
        self.src = src
        self.screen = Screen(0, 0, "", bytearray())

    async def handshake(self) -> Screen:
        version = await self.src.readexactly(12)
        if not version.startswith(b"RFB 003."):
            raise ValueError(f"not an RFB server: {version!r}")
        await self.src.write(b"RFB 003.008\n")
        (count,) = await self.src.readexactly(1)
        types = await self.src.readexactly(count)
        if 1 not in types:
            raise ValueError(f"server wants authentication: security types {list(types)}")
        await self.src.write(b"\x01")
        (result,) = struct.unpack(">I", await self.src.readexactly(4))
        if result != 0:
            raise ValueError("security handshake failed")
        await self.src.write(b"\x01")  # ClientInit: shared
        width, height = struct.unpack(">HH", await self.src.readexactly(4))
        await self.src.readexactly(16)  # the server's pixel format: we set ours
        (name_len,) = struct.unpack(">I", await self.src.readexactly(4))
        name = (await self.src.readexactly(name_len)).decode(errors="replace")
        self.screen = Screen(width, height, name, bytearray(width * height * 3))
        await self.src.write(b"\x00\x00\x00\x00" + PIXEL_FORMAT)
        await self.src.write(struct.pack(">BxHi", 2, 1, RAW))
        return self.screen

    async def request(self, incremental: bool = False, x: int = 0, y: int = 0, w: int = 0, h: int = 0) -> None:
        """FramebufferUpdateRequest; the whole screen unless a region is given."""
        w, h = w or self.screen.width, h or self.screen.height
        await self.src.write(struct.pack(">BBHHHH", 3, int(incremental), x, y, w, h))

    async def refresh(self) -> int:
        """Ask for the whole screen and read updates until all of it came (a server may split it)."""
        await self.request()
        covered = 0
        while covered < self.screen.width * self.screen.height * 4:
            covered += await self.update()
        return covered

    async def update(self) -> int:
        """Read server messages until one FramebufferUpdate has been applied; its payload bytes."""
        while True:
            (kind,) = await self.src.readexactly(1)
            if kind == 0:
                return await self._framebuffer_update()
            if kind == 2:  # bell
                continue
            if kind == 3:  # server cut text
                _, n = struct.unpack(">3sI", await self.src.readexactly(7))
                await self.src.readexactly(n)
                continue
            raise ValueError(f"unexpected RFB server message {kind}")

    async def _framebuffer_update(self) -> int:
        (_, count) = struct.unpack(">BH", await self.src.readexactly(3))
        total = 0
        for _ in range(count):
            x, y, w, h, enc = struct.unpack(">HHHHi", await self.src.readexactly(12))
            if enc != RAW:  # pseudo-encodings we did not ask for carry no pixels
                raise ValueError(f"unexpected encoding {enc}")
            data = await self.src.readexactly(w * h * 4)
            total += len(data)
            self._blit(x, y, w, h, data)
        return total

    def _blit(self, x: int, y: int, w: int, h: int, bgrx: bytes) -> None:
        rgb = bytearray(w * h * 3)
        rgb[0::3], rgb[1::3], rgb[2::3] = bgrx[2::4], bgrx[1::4], bgrx[0::4]
        row = self.screen.width * 3
        for r in range(h):
            at = (y + r) * row + x * 3
            self.screen.pixels[at:at + w * 3] = rgb[r * w * 3:(r + 1) * w * 3]
