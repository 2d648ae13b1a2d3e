"""What the coordinator, the console proxy, the KVM agent and `hs` agree on about consoles: the kinds, the
console websocket (its URL, its subprotocol), and the tunnel ticket that lets the proxy open one console on
one host for a short while.

The coordinator issues a ticket when the proxy resolves a user's token; the agent checks it offline. It is
an `agentkit.tickets` ticket scoped to `vm|kind`: the proxy that carries it holds no host credential and
can open nothing else. A user's token has one shape (`new_token`), so that the proxy refuses what cannot be
one without asking the coordinator.
"""

from __future__ import annotations

import re
import secrets
from typing import Literal, get_args

from yarl import URL

from agentkit import tickets

ConsoleKind = Literal["vnc", "spice", "serial"]
KINDS: tuple[ConsoleKind, ...] = get_args(ConsoleKind)
# The tunnel's upgrade to a raw byte stream (no websocket framing, one framing hop less on the path); the
# websocket tunnel stays for what needs close codes through the tunnel (the serial takeover's 4409).
RAW_UPGRADE = "hoststack-console"
# The console websockets' subprotocol (the proxy's and the tunnel's): binary messages, as noVNC and websockify
# name it.
SUBPROTOCOL = "binary"
_CONTEXT = b"hoststack console tunnel v1\0"
TICKET_LIFETIME = 60  # seconds a ticket opens tunnels for, from its grant
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 random bytes, base64url without padding


class TicketRefused(tickets.TicketRefused):
    msg_fmt = "console ticket refused: {why}"


def websocket_url(page: str) -> str:
    """The console websocket of a console page's URL (what the page itself opens: its path + /ws, the same
    token)."""
    url = URL(page)
    return str(url.with_scheme("wss" if url.scheme == "https" else "ws").with_path(url.path + "/ws")
               .with_query(url.query))


def new_token() -> str:
    """A user's console token: 32 random bytes (what the coordinator stores is its SHA-256)."""
    return secrets.token_urlsafe(32)


def is_token(token: str) -> bool:
    """Whether `token` has the shape `new_token` gives every token (anything else is no token of ours)."""
    return _TOKEN.fullmatch(token) is not None


def issue_ticket(key: bytes, vm: str, kind: ConsoleKind, expires: int) -> str:
    """A ticket for `kind` console of `vm`, valid to open a tunnel until `expires` (unix seconds)."""
    return tickets.sign(key, _CONTEXT, f"{vm}|{kind}", expires)


def check_ticket(key: bytes, vm: str, kind: str, ticket: str, now: float) -> None:
    """Raise TicketRefused unless `ticket` was issued with `key` for this vm and kind and has not expired."""
    tickets.verify(key, _CONTEXT, f"{vm}|{kind}", ticket, now, lifetime=TICKET_LIFETIME, refused=TicketRefused,
                   what=f"the {kind} console of {vm}")
