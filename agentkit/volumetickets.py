"""The ticket that lets a migration's target host read one volume's files from the source host's agent.

The coordinator issues it to the target (which asks with its own token) for a short while; the source's
agent checks it offline. It is an `agentkit.tickets` ticket scoped to the volume, keyed with the source
host's key: the target holds no credential of the source and can read nothing but that volume, and only
until the ticket expires.
"""

from __future__ import annotations

from agentkit import tickets

_CONTEXT = b"hoststack volume migration v1\0"
LIFETIME = 600  # seconds a target may read the source's files with one ticket (it asks again after)


class VolumeTicketRefused(tickets.TicketRefused):
    msg_fmt = "volume ticket refused: {why}"


def issue(key: bytes, volume: str, expires: int) -> str:
    """A ticket to read `volume`'s files until `expires` (unix seconds) from the host whose key is `key`."""
    return tickets.sign(key, _CONTEXT, volume, expires)


def check(key: bytes, volume: str, ticket: str, now: float) -> None:
    """VolumeTicketRefused unless `ticket` was issued with `key` for `volume` and has not expired."""
    tickets.verify(key, _CONTEXT, volume, ticket, now, lifetime=LIFETIME, refused=VolumeTicketRefused,
                   what=f"volume {volume}")
