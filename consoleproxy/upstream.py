"""Opening a granted console: the console tunnel of the agent on the VM's host.

The agent checks the ticket offline and relays to the VM's console socket; nothing on a hypervisor
listens for consoles itself. A graphical console's tunnel is a raw byte stream after an HTTP upgrade
(`agentkit.consoles.RAW_UPGRADE`): the proxy frames once, for the browser, instead of unframing the
tunnel's websocket messages and framing them again, and TCP keepalive stands in for the websocket
heartbeat. The serial console's tunnel stays a websocket: its takeover reaches the browser as 4409; an
agent from before the raw tunnel answers its upgrade with 400 and gets the websocket too.
Every failure becomes `ConsoleUnreachable` naming the VM, kind and cause.
"""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
from yarl import URL

from agentkit import tls
from agentkit.consoles import RAW_UPGRADE, SUBPROTOCOL
from agentkit.relay import Pipe, PipeError, SocketPipe, WsPipe
from agentkit.upgrade import keepalive
from consoleproxy.errors import ConsoleUnreachable
from consoleproxy.grants import Grant
from consoleproxy.settings import ConsoleProxySettings

# What one read of the raw tunnel asks for. The agent sends what one read of the console socket gave (about
# 214 KiB, a VNC server's socket buffer's worth), so with 512 KiB a read here often takes two and the proxy
# wakes, and frames, less often: side by side 7-10% less proxy CPU per GiB than 256 KiB without TLS (with
# TLS no clear change); 1 MiB saves a little more here but costs the client and the agent more.
TUNNEL_READ = 512 * 1024


class Refused(Exception):
    """The agent answered the upgrade with an HTTP status other than 101."""

    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


async def open_tunnel(session: aiohttp.ClientSession, grant: Grant, settings: ConsoleProxySettings) -> Pipe:
    """The agent's tunnel for `grant`, as a pipe."""
    try:
        async with asyncio.timeout(settings.connect_timeout):
            if grant.kind != "serial":
                try:
                    return await _open_raw(grant, settings)
                except Refused as e:
                    if e.status != "400":
                        raise  # 400: an agent from before the raw tunnel, expecting a websocket
            ws = await session.ws_connect(
                grant.tunnel_url, headers={"Authorization": f"Ticket {grant.ticket}"}, protocols=(SUBPROTOCOL,),
                compress=0, max_msg_size=settings.max_message, heartbeat=settings.heartbeat)
            return WsPipe(ws, "tunnel")
    except (aiohttp.WSServerHandshakeError, Refused) as e:
        raise ConsoleUnreachable(vm=grant.vm, kind=grant.kind, why=f"the host's agent answered {e.status}") from e
    except TimeoutError as e:
        raise ConsoleUnreachable(vm=grant.vm, kind=grant.kind,
                                 why=f"no answer from the host within {settings.connect_timeout:g} s") from e
    except (aiohttp.ClientError, OSError, PipeError) as e:
        raise ConsoleUnreachable(vm=grant.vm, kind=grant.kind, why=str(e) or type(e).__name__) from e


async def _open_raw(grant: Grant, settings: ConsoleProxySettings) -> SocketPipe:
    """The tunnel upgraded to a raw byte stream (`ws://` plain, `wss://` TLS verified as the websocket
    tunnel's is: with the proxy's CA)."""
    url = URL(grant.tunnel_url)
    assert url.host is not None and url.port is not None
    context = (tls.client(settings.tls) or ssl.create_default_context()) if url.scheme == "wss" else None
    transport, pipe = await asyncio.get_running_loop().create_connection(
        lambda: SocketPipe("tunnel", read_size=TUNNEL_READ), url.host, url.port, ssl=context)
    try:
        keepalive(transport.get_extra_info("socket"), settings.heartbeat)
        await pipe.send(f"GET {url.raw_path_qs} HTTP/1.1\r\nHost: {url.raw_authority}\r\nConnection: Upgrade\r\n"
                        f"Upgrade: {RAW_UPGRADE}\r\nAuthorization: Ticket {grant.ticket}\r\n\r\n".encode())
        status = (await pipe.head()).split(b" ", 2)[1:2]
        if status != [b"101"]:
            raise Refused(status[0].decode(errors="replace") if status else "no status")
    except BaseException:
        transport.close()
        raise
    return pipe
