"""What a console token grants, and the one check every connection passes before any byte moves.

A `Resolver` turns a user's token into a `Grant`: the VM and console kind the token was issued for, until
when it may be used to connect, and the tunnel on the VM's host with the ticket that opens it. The token
is checked against the URL it came with: a token for another VM or another kind is refused, and so is
one past its deadline (an open console stays open: the deadline is for connecting). The deadline is the
coordinator's: it says how many seconds are left as it answers, so this machine's clock, off the
coordinator's, neither refuses every token nor keeps one usable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from agentkit.consoles import ConsoleKind
from consoleproxy.errors import TokenExpired, TokenMismatch


@dataclass(frozen=True)
class Grant:
    vm: str
    kind: ConsoleKind
    expires_in: float  # seconds left to connect as the coordinator answered (<= 0: past), on its clock
    tunnel_url: str  # the agent's console tunnel (ws:// or wss://) for this VM and kind
    ticket: str  # opens that tunnel until about expires_at (agentkit.consoles)


class Resolver(Protocol):
    async def resolve(self, token: str) -> Grant:
        """The grant of `token`; raises TokenUnknown or CoordinatorRefused (the coordinator's refusal), or
        CoordinatorUnavailable when it cannot tell."""


def admit(grant: Grant, vm: str, kind: str) -> None:
    """Raise unless `grant`, resolved just now, opens the `kind` console of `vm`."""
    if (grant.vm, grant.kind) != (vm, kind):
        raise TokenMismatch(granted=grant.kind, granted_vm=grant.vm, kind=kind, vm=vm)
    if grant.expires_in < 0:
        raise TokenExpired(ago=-grant.expires_in)
