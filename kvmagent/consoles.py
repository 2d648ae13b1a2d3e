"""The agent's console tunnel: the only way in to a VM's console on a hypervisor.

`GET /v1/consoles/{vm}/{kind}` with `Authorization: Ticket <ticket>`, upgraded to a websocket of binary
messages, relayed to the unix socket libvirt gives that console (VNC, SPICE, serial). The ticket is issued
by the coordinator to a console proxy for one VM, one kind and a short while, keyed with this host's
token (`agentkit.consoles`), so it is checked here without asking anyone. Failures are answered before the
upgrade with the error envelope: 401 no ticket, 403 a wrong or expired one, 404 no such console here,
503 the socket refuses. A serial port takes one client at a time: a new session takes over and the
previous one is closed with 4409 (cut off `TAKEOVER` on when its browser reads nothing). A graphical
console (VNC, SPICE) may ask with `Upgrade: hoststack-console` for a raw byte stream instead of a
websocket: one framing hop less on the bulk path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from agentkit.consoles import KINDS, RAW_UPGRADE, SUBPROTOCOL, ConsoleKind, check_ticket
from agentkit.errors import HostStackError, Invalid, NotFound, Unauthorized, Unavailable
from agentkit.relay import Outcome, SocketPipe, WsPipe, http_close, relay
from agentkit.upgrade import keepalive, upgrade

log = logging.getLogger(__name__)
EXCLUSIVE: frozenset[str] = frozenset({"serial"})
# Seconds a session taken over has to take its close before it is cut off: one that reads nothing never takes
# it, and the new session's proxy waits for its tunnel `connect_timeout` (10 s) at most.
TAKEOVER = 2.0
# Where a VM's console socket is, or None when the VM has no such console on this host.
Locate = Callable[[str, ConsoleKind], Path | None]


class ConsoleTunnel:
    PREFIX = "/v1/consoles/"

    def __init__(self, key: Callable[[], bytes], locate: Locate, idle_timeout: float | None = None,
                 max_message: int = 1 << 20, heartbeat: float = 30):
        self.key = key
        self.locate = locate
        self.idle_timeout = idle_timeout
        self.max_message = max_message
        self.heartbeat = heartbeat
        self._exclusive: dict[tuple[str, str], WsPipe] = {}

    def routes(self) -> list[web.RouteDef]:
        return [web.get(self.PREFIX + "{vm}/{kind}", self.handle)]

    def _socket(self, request: web.Request) -> tuple[str, ConsoleKind, Path]:
        vm, kind = request.match_info["vm"], request.match_info["kind"]
        scheme, _, ticket = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "ticket" or not ticket:
            raise Unauthorized("a console ticket is required (Authorization: Ticket ...)")
        check_ticket(self.key(), vm, kind, ticket.strip(), time.time())
        console = next((k for k in KINDS if k == kind), None)
        path = self.locate(vm, console) if console else None
        if console is None or path is None:
            raise NotFound(what="console", ident=f"{kind} of VM {vm}")
        return vm, console, path

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), compress=False, max_msg_size=self.max_message,
                                   heartbeat=self.heartbeat)
        raw = request.headers.get("Upgrade", "").lower() == RAW_UPGRADE
        try:
            vm, kind, path = self._socket(request)
            if raw and kind in EXCLUSIVE:
                raise Invalid(f"the {kind} console needs the websocket tunnel (its takeover has a close code)")
            if not raw and not ws.can_prepare(request).ok:
                raise web.HTTPBadRequest(reason="Websocket Upgrade Expected")
            await self._take_over(vm, kind)
            try:
                console = await SocketPipe.open_unix(str(path), f"{kind} socket")
            except OSError as e:
                raise Unavailable(f"the {kind} console of VM {vm} does not answer: {e.strerror or e}") from e
        except HostStackError as e:
            log.info("console tunnel refused: %s", e, extra={"fields": {"code": e.code}})
            return web.json_response(e.body(), status=e.status)
        resp = web.StreamResponse(status=101, headers={"Upgrade": RAW_UPGRADE, "Connection": "Upgrade"}) if raw else ws
        if not await upgrade(resp, request, console, "proxy"):
            return resp
        out = await (self._relay_raw(request, console) if raw else self._relay_ws(request, vm, kind, ws, console))
        log.info("console tunnel %s of %s closed by %s: %s", kind, vm, out.ended_by or "the agent", out.close.reason,
                 extra={"fields": {"vm": vm, "kind": kind, "raw": raw, "up_bytes": out.a_to_b,
                                   "down_bytes": out.b_to_a}})
        return resp

    async def _relay_raw(self, request: web.Request, console: SocketPipe) -> Outcome:
        """The upgraded connection's bytes as they are; aiohttp gets the connection back once the relay has
        closed it, so that it sees the connection lost and finishes the request."""
        transport, handler = request.transport, request.protocol
        assert isinstance(transport, asyncio.Transport)
        handler.keep_alive(False)
        keepalive(transport.get_extra_info("socket"), self.heartbeat)  # a proxy gone dead: no websocket heartbeat here
        proxy = SocketPipe.adopt(transport, "proxy")
        try:
            return await relay(proxy, console, self.idle_timeout)
        finally:
            proxy.give_back()

    async def _relay_ws(self, request: web.Request, vm: str, kind: str, ws: web.WebSocketResponse,
                        console: SocketPipe) -> Outcome:
        transport = request.transport
        assert isinstance(transport, asyncio.Transport)
        proxy = WsPipe(ws, "proxy", transport)
        if kind in EXCLUSIVE:
            self._exclusive[(vm, kind)] = proxy
        try:
            return await relay(proxy, console, self.idle_timeout)
        finally:
            if self._exclusive.get((vm, kind)) is proxy:
                del self._exclusive[(vm, kind)]

    async def _take_over(self, vm: str, kind: str) -> None:
        """Close the session that holds an exclusive console, so the new one gets the socket; one whose browser
        reads nothing is cut off `TAKEOVER` on (it held the console until its proxy's idle limit)."""
        old = self._exclusive.pop((vm, kind), None)
        if old is not None:
            await old.close(http_close(409, "taken over by a newer console session"), within=TAKEOVER)
