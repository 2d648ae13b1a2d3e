"""The HTTP connection a console relay runs on (agentkit.relay): its upgrade answered, and TCP keepalive where no
websocket heartbeat watches a raw tunnel."""

from __future__ import annotations

import socket

from aiohttp import web

from agentkit.relay import Pipe, http_close


async def upgrade(response: web.StreamResponse, request: web.Request, opened: Pipe, peer: str) -> bool:
    """Answer `request`'s upgrade with `response`, for which `opened` (the other side) was opened; False when
    the `peer` left meanwhile (it closed its tab while its console was opened: no bug), and `opened` is closed
    then, as when the handshake fails otherwise."""
    try:
        await response.prepare(request)
    except BaseException as e:
        await opened.close(http_close(499, f"{peer} left during the handshake"))
        if isinstance(e, ConnectionError):  # aiohttp's own ending of the request sees it gone too
            return False
        raise
    return True


def keepalive(sock: socket.socket, heartbeat: float) -> None:
    """A raw tunnel's TCP connection (either end) ends within about two heartbeats of its peer or path going
    dead, as a websocket's heartbeat would end it: keepalive probes after a heartbeat of silence, and a user
    timeout of two for data the peer does not acknowledge."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(heartbeat)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(heartbeat / 3)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(2 * heartbeat * 1000))
