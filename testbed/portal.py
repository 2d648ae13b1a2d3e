"""A loopback port inside a namespace that leads to a loopback port of the root namespace.

Simulated hosts reach the coordinator the way real hosts reach a management network, without any
link or route in the root namespace: this process opens its listening socket inside the namespace
(setns in a short-lived thread: the socket keeps the namespace it was made in) and relays each
connection to 127.0.0.1:<target> from the root namespace.

    python -m testbed.portal NETNS LISTEN_PORT TARGET_PORT [LISTEN_ADDRESS]

LISTEN_ADDRESS (default 127.0.0.1) may be any address of the namespace, e.g. a bridge address that
other namespaces on that bridge reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys

from agentkit.netns import netns_socket


def listen_in(ns: str, port: int, address: str = "127.0.0.1") -> socket.socket:
    """A listening TCP socket on `address`:`port` of namespace `ns`."""

    def listen(s: socket.socket) -> None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, port))
        s.listen(128)
        s.setblocking(False)

    return netns_socket(ns, socket.AF_INET, socket.SOCK_STREAM, listen)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def serve(ns: str, port: int, target: int, address: str = "127.0.0.1") -> None:
    async def relay(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            tr, tw = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            w.close()
            return
        await asyncio.gather(_pipe(r, tw), _pipe(tr, w))

    server = await asyncio.start_server(relay, sock=listen_in(ns, port, address))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:5]))
