"""Opening a granted console: a websocket to the console tunnel of the agent on the VM's host.

The agent checks the ticket offline and relays to the VM's console socket; nothing on a hypervisor
listens for consoles itself. Every failure becomes `ConsoleUnreachable` naming the VM, kind and cause.
"""

from __future__ import annotations

import asyncio

import aiohttp

from agentkit.relay import WsPipe
from consoleproxy.errors import ConsoleUnreachable
from consoleproxy.grants import Grant
from consoleproxy.settings import ConsoleProxySettings

SUBPROTOCOL = "binary"


async def open_tunnel(session: aiohttp.ClientSession, grant: Grant, settings: ConsoleProxySettings) -> WsPipe:
    """The agent's tunnel for `grant`, as a pipe."""
    try:
        async with asyncio.timeout(settings.connect_timeout):
            ws = await session.ws_connect(
                grant.tunnel_url, headers={"Authorization": f"Ticket {grant.ticket}"}, protocols=(SUBPROTOCOL,),
                compress=0, max_msg_size=settings.max_message, heartbeat=settings.heartbeat)
    except aiohttp.WSServerHandshakeError as e:
        raise ConsoleUnreachable(vm=grant.vm, kind=grant.kind, why=f"the host's agent answered {e.status}") from e
    except TimeoutError as e:
        raise ConsoleUnreachable(vm=grant.vm, kind=grant.kind,
                                 why=f"no answer from the host within {settings.connect_timeout:g} s") from e
    except (aiohttp.ClientError, OSError) as e:
        raise ConsoleUnreachable(vm=grant.vm, kind=grant.kind, why=str(e) or type(e).__name__) from e
    return WsPipe(ws, "tunnel")
