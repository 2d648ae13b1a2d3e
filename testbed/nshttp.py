"""A minimal HTTP/1.1 client whose TCP connection starts inside a given network namespace.

Lets a test process speak as a VM (source address, MAC and routes of the VM's namespace) without a
subprocess per request, while the server under test runs in the same event loop. `None` means no
answer: connection refused, reset or timed out, which is what a dropped (spoofed) packet looks like.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from agentkit.netns import netns_socket


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


async def request(ns_name: str | None, host: str, path: str, *, method: str = "GET",
                  headers: dict[str, str] | None = None, port: int = 80, timeout: float = 2.0) -> Reply | None:
    """`ns_name` None: from this process's own namespace (a client process started inside the VM's)."""
    if ns_name is None:
        sock = socket.socket()
        sock.setblocking(False)
    else:
        sock = netns_socket(ns_name, socket.AF_INET, socket.SOCK_STREAM, lambda s: s.setblocking(False))
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close", "Content-Length: 0"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            raw = await reader.read()
            writer.close()
    except (OSError, TimeoutError):
        if writer is not None:  # the transport owns the socket: closing it alone would leave its fd watched
            writer.transport.abort()
        else:
            sock.close()
        return None
    if not raw:
        return None
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in header_lines)
    return Reply(int(status_line.split()[1]), fields, body)
