"""`hs vm console VM --listen [ADDR:]PORT`: a VM's screen for native clients (remote-viewer, vncviewer).

qemu's VNC and SPICE servers listen on unix sockets of the hypervisor only, and a console proxy's websocket
is the one way in (docs/console.md). The bridge listens on a TCP port of the user's machine and relays each
connection it accepts over a websocket of its own to the proxy, so a client speaks VNC or SPICE to it as it
would to qemu:
- a connection gets a console URL from the coordinator; one URL serves the connections that come within
  `REUSE` seconds of it (a token opens any number until it expires, and a SPICE client opens its channels
  all at once), a later one gets a fresh token;
- the proxy's TLS is verified with the CLI's CA; the websocket carries binary messages with the proxy's
  subprotocol; the bytes move through `agentkit.relay`, with its flow control both ways, so what waits for
  a slow side is bounded per connection;
- each connection is said on stderr when it reaches the console, and when it ends: it ends when either side
  closes, and the line says which side and why (a token the proxy refused, the VM stopped); at most
  `MAX_CONNECTIONS` are open at once, more are closed at once.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from agentkit.consoles import SUBPROTOCOL, websocket_url
from agentkit.pipes import emit
from agentkit.relay import ENDED, SocketPipe, WsPipe, relay
from agentkit.supervise import Supervisor
from agentkit.tls import client_context
from coordinator.cli.errors import CliError
from coordinator.client import ApiClientError

LOOPBACK = "127.0.0.1"
MAX_CONNECTIONS = 32  # a SPICE client opens up to about 8 channels, a VNC client one connection
REUSE = 5.0  # seconds a console URL serves further connections
CONNECT_TIMEOUT = 30.0  # the proxy resolves the token and opens the host's tunnel (10 s each) before it answers
HEARTBEAT = 30.0  # pings that find a proxy gone without a word, as the proxy's own find browsers

Listen = tuple[str, int]


def listen_address(text: str) -> Listen:
    """`[ADDR:]PORT` as (address, port): ADDR an IP address (IPv6 in brackets), 127.0.0.1 when left out."""
    host, sep, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host if sep else LOOPBACK)
    except ValueError:
        address = None
    if (address is None or bracketed != (address.version == 6) or not (port.isascii() and port.isdigit())
            or int(port) > 65535):
        raise argparse.ArgumentTypeError(f"{text!r}: expected [ADDR:]PORT, e.g. 5931 or 0.0.0.0:5931 (ADDR an IP "
                                         "address, an IPv6 one in brackets; PORT 0 picks a free one)")
    return str(address), int(port)


def host_port(address: Listen) -> str:
    """`127.0.0.1:5931`, `[::1]:5931`."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Urls:
    """Console websocket URLs from the coordinator (`ask`: its answer to POST /v1/vms/{uuid}/console). One
    serves the connections that come within `REUSE` s of it, and never past half of what the coordinator
    gave it by this machine's clock, so a clock behind the coordinator's gets a token per connection."""

    def __init__(self, ask: Callable[[], Awaitable[dict[str, Any]]]):
        self._ask = ask
        self._lock = asyncio.Lock()  # connections that come together share one request
        self._url = ""
        self._until = 0.0

    async def url(self) -> str:
        async with self._lock:
            if time.monotonic() >= self._until:
                got = await self._ask()
                self._url = websocket_url(got["url"])
                self._until = time.monotonic() + min(REUSE, (got["expires_at"] - time.time()) / 2)
        return self._url


class _Accepted(SocketPipe):
    """A client's connection; `opened` hears of it once it is made."""

    def __init__(self, opened: Callable[[_Accepted, asyncio.Transport, str], None]):
        super().__init__("client")
        self._opened = opened

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert isinstance(transport, asyncio.Transport)
        self._opened(self, transport, host_port(transport.get_extra_info("peername")[:2]))


class Bridge:
    """Relays each client that connects to the console of `urls` (the proxy verified with `ca`) until
    cancelled, and says on stderr how each connection ended."""

    def __init__(self, urls: Urls, ca: Path | None):
        self._urls = urls
        self._ssl = client_context(ca)  # the coordinator's client made it already: the file is good
        self._tasks = Supervisor()  # a bug in a connection's task ends hs, as it would any process of ours
        self._open = 0
        self._server: asyncio.Server | None = None
        self._session: aiohttp.ClientSession | None = None

    async def serve(self, address: Listen, listening: Callable[[Listen], None]) -> None:
        """Accept on `address` until cancelled (Ctrl-C), then close every connection; `listening` gets the
        address the port was bound to. A port that cannot be bound is a CliError."""
        try:
            self._server = await asyncio.get_running_loop().create_server(lambda: _Accepted(self._accept), *address)
        except OSError as e:
            raise CliError(f"cannot listen on {host_port(address)}: {os.strerror(e.errno) if e.errno else e}") from None
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl),
                                              timeout=aiohttp.ClientTimeout(total=None))  # CONNECT_TIMEOUT instead
        async with self._session, self._tasks:
            listening(self._server.sockets[0].getsockname()[:2])
            await self._server.serve_forever()  # closes the port when cancelled

    def _accept(self, client: SocketPipe, transport: asyncio.Transport, peer: str) -> None:
        if self._server is None or not self._server.is_serving():  # stopping
            transport.close()
        elif self._open >= MAX_CONNECTIONS:
            transport.close()
            say(f"{peer}: refused, {MAX_CONNECTIONS} connections are open")
        else:
            self._tasks.start(self._bridge(client, peer), f"console bridge {peer}")
            self._open += 1

    async def _bridge(self, client: SocketPipe, peer: str) -> None:
        try:
            proxy = await self._connect()
            say(f"{peer}: connected to the console proxy")
            out = await relay(client, WsPipe(proxy, "console proxy"))
        except CliError as e:
            say(f"{peer}: no console: {e}")
        else:
            say(f"{peer}: closed by the {out.ended_by} after {out.seconds:.0f} s: {out.close.reason} "
                f"({out.close.code}); {out.a_to_b} bytes to the console, {out.b_to_a} from it")
        finally:
            self._open -= 1
            await client.close(ENDED)  # when there was no console, or Ctrl-C came first (else done already)

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        """The console proxy's websocket for one connection; CliError says why there is none."""
        assert self._session is not None
        try:
            url = await self._urls.url()
        except ApiClientError as e:
            raise CliError(f"the coordinator answered {e.message}") from None
        except (aiohttp.ClientError, OSError) as e:
            raise CliError(f"the coordinator cannot be reached: {e}") from None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                return await self._session.ws_connect(url, protocols=(SUBPROTOCOL,), compress=0, heartbeat=HEARTBEAT)
        except TimeoutError:
            raise CliError(f"the console proxy did not answer within {CONNECT_TIMEOUT:g} s") from None
        except (aiohttp.ClientError, OSError) as e:
            raise CliError(f"the console proxy: {e}") from None


def announce(kind: str, address: Listen, as_json: bool) -> None:
    """The address a client connects to, alone on stdout (JSON with --json); how, on stderr, and who else
    may when it is not a loopback address."""
    url = f"{kind}://{host_port(address)}"
    emit(json.dumps({"url": url, "kind": kind, "address": address[0], "port": address[1]}) if as_json else url)
    say(f"the VM's {kind.upper()} console is on {url}: connect a client (remote-viewer {url}); Ctrl-C ends it")
    if not ipaddress.ip_address(address[0]).is_loopback:
        say(f"anyone who can reach {host_port(address)} gets this console: no password is asked")


def say(text: str) -> None:
    """One line for the person at the terminal, on stderr."""
    print(f"hs: {text}", file=sys.stderr, flush=True)
