"""What the coordinator, the console proxy and the KVM agent agree on about consoles: the kinds, and the
tunnel ticket that lets the proxy open one console on one host for a short while.

The coordinator issues a ticket when the proxy resolves a user's token; the agent checks it offline.
The ticket is an HMAC-SHA256 over `vm|kind|expires` keyed with the SHA-256 of the host's token: the
coordinator stores exactly that digest (it never keeps the token), the agent computes it from its own
token, and the proxy that carries the ticket holds no host credential and can open nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal, get_args

from agentkit.errors import Forbidden

ConsoleKind = Literal["vnc", "spice", "serial"]
KINDS: tuple[ConsoleKind, ...] = get_args(ConsoleKind)
# The tunnel's upgrade to a raw byte stream (no websocket framing, one framing hop less on the path); the
# websocket tunnel stays for what needs close codes through the tunnel (the serial takeover's 4409).
RAW_UPGRADE = "hoststack-console"
_CONTEXT = b"hoststack console tunnel v1\0"


class TicketRefused(Forbidden):
    code = "ticket_refused"
    msg_fmt = "console ticket refused: {why}"


def host_key(host_token: str) -> bytes:
    """The ticket key of a host: SHA-256 of its token (what the coordinator stores for the host)."""
    return hashlib.sha256(host_token.encode()).digest()


def _mac(key: bytes, vm: str, kind: str, expires: int) -> str:
    return hmac.new(key, _CONTEXT + f"{vm}|{kind}|{expires}".encode(), hashlib.sha256).hexdigest()


def issue_ticket(key: bytes, vm: str, kind: ConsoleKind, expires: int) -> str:
    """A ticket for `kind` console of `vm`, valid to open a tunnel until `expires` (unix seconds)."""
    return f"{expires}.{_mac(key, vm, kind, expires)}"


def check_ticket(key: bytes, vm: str, kind: str, ticket: str, now: float) -> None:
    """Raise TicketRefused unless `ticket` was issued with `key` for this vm and kind and has not expired."""
    expires_text, _, mac = ticket.partition(".")
    if not expires_text.isdigit() or len(expires_text) > 12:
        raise TicketRefused(why="malformed")
    expires = int(expires_text)
    if not hmac.compare_digest(mac.encode("ascii", "replace"), _mac(key, vm, kind, expires).encode()):
        raise TicketRefused(why=f"not issued for the {kind} console of {vm} on this host")
    if expires < now:
        raise TicketRefused(why="expired")
