"""The ticket that lets a migration's target host read one volume's files from the source host's agent.

The coordinator issues it to the target (which asks with its own token) for a short while; the source's
agent checks it offline. It is an HMAC-SHA256 over `volume|expires` keyed with the SHA-256 of the
source host's token (what the coordinator keeps of it, as for console tickets): the target holds no
credential of the source and can read nothing but that volume, and only until the ticket expires.
"""

from __future__ import annotations

import hashlib
import hmac

from agentkit.errors import Forbidden

_CONTEXT = b"hoststack volume migration v1\0"


class VolumeTicketRefused(Forbidden):
    code = "ticket_refused"
    msg_fmt = "volume ticket refused: {why}"


def _mac(key: bytes, volume: str, expires: int) -> str:
    return hmac.new(key, _CONTEXT + f"{volume}|{expires}".encode(), hashlib.sha256).hexdigest()


def issue(key: bytes, volume: str, expires: int) -> str:
    """A ticket to read `volume`'s files until `expires` (unix seconds) from the host whose key is `key`."""
    return f"{expires}.{_mac(key, volume, expires)}"


def check(key: bytes, volume: str, ticket: str, now: float) -> None:
    """VolumeTicketRefused unless `ticket` was issued with `key` for `volume` and has not expired."""
    expires_text, _, mac = ticket.partition(".")
    if not expires_text.isdigit() or len(expires_text) > 12:
        raise VolumeTicketRefused(why="malformed")
    if not hmac.compare_digest(mac.encode("ascii", "replace"), _mac(key, volume, int(expires_text)).encode()):
        raise VolumeTicketRefused(why=f"not issued for volume {volume} on this host")
    if int(expires_text) < now:
        raise VolumeTicketRefused(why="expired")
