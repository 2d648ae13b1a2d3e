"""A loopback port inside a namespace that leads to a loopback port of the root namespace.

Simulated hosts reach the coordinator the way real hosts reach a management network, without any
link or route in the root namespace: this process opens its listening socket inside the namespace
(setns in a short-lived thread: the socket keeps the namespace it was made in) and relays each
connection to 127.0.0.1:<target> from the root namespace. Several targets (`8740,8750`) make it the
load balancer in front of coordinator replicas: a connection goes to the first target that accepts it,
starting with the one the previous connection reached.

    python -m testbed.portal NETNS LISTEN_PORT TARGET_PORT[,TARGET_PORT...] [LISTEN_ADDRESS]
    python -m testbed.portal --into NETNS LISTEN_PORT TARGET_PORT TARGET_ADDRESS [LISTEN_ADDRESS]

LISTEN_ADDRESS (default 127.0.0.1) may be any address of the namespace, e.g. a bridge address that
other namespaces on that bridge reach. `--into` is the other way: a loopback port of the root namespace
leading to an address inside the namespace (a coordinator installed on a simulated control node); it
listens on LISTEN_ADDRESS of the root namespace (default 127.0.0.1, any loopback address).
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


async def serve(ns: str, port: int, targets: list[int], address: str = "127.0.0.1") -> None:
    first = 0

    async def relay(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal first
        for i in range(len(targets)):
            n = (first + i) % len(targets)
            try:
                tr, tw = await asyncio.open_connection("127.0.0.1", targets[n])
            except OSError:
                continue
            first = n
            await asyncio.gather(_pipe(r, tw), _pipe(tr, w))
            return
        w.close()

    server = await asyncio.start_server(relay, sock=listen_in(ns, port, address))
    async with server:
        await server.serve_forever()


async def serve_into(ns: str, port: int, target: int, address: str, listen: str = "127.0.0.1") -> None:
    loop = asyncio.get_running_loop()

    async def relay(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        sock = netns_socket(ns, socket.AF_INET, socket.SOCK_STREAM, lambda s: s.setblocking(False))
        try:
            await loop.sock_connect(sock, (address, target))
            tr, tw = await asyncio.open_connection(sock=sock)
        except OSError:
            sock.close()
            w.close()
            return
        await asyncio.gather(_pipe(r, tw), _pipe(tr, w))

    server = await asyncio.start_server(relay, listen, port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if sys.argv[1] == "--into":
        asyncio.run(serve_into(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:7]))
    else:
        asyncio.run(serve(sys.argv[1], int(sys.argv[2]), [int(p) for p in sys.argv[3].split(",")], *sys.argv[4:5]))
