"""Scoped, expiring tickets: what the coordinator signs for a host's agent to check offline.

A ticket is `<expires>.<hex HMAC-SHA256>` over a context naming its use, a scope (the VM and console kind,
the volume) and the expiry, keyed with the SHA-256 of the host's token: the coordinator keeps exactly that
digest (never the token), the agent computes it from its own token, and whoever carries the ticket holds
no credential of the host and can open nothing but that scope until it expires. The context keeps a
ticket for one use from opening another; the expiry is covered by the MAC. One signer and one checker, so
the uses (console tunnels, a migration's volume reads) cannot drift apart.

The expiry is on the coordinator's clock and is checked on the host's: the two may differ by `SKEW` either
way (what certificates allow too, `agentkit.pki.SKEW`). A ticket is honoured until `SKEW` past its expiry,
and one that reaches further ahead than its use's lifetime plus `SKEW` is refused, saying that this host's
clock is behind: a host whose clock is off by more is told so in every refusal, and is neither locked out
by a minute of drift nor honours tickets for as long as its clock lags.
"""

from __future__ import annotations

import hashlib
import hmac

from agentkit.errors import Forbidden

SKEW = 300  # seconds a host's clock may be off the coordinator's, either way


class TicketRefused(Forbidden):
    """Base of each use's refusal (its `msg_fmt` names the use and takes `why`)."""

    code = "ticket_refused"
    msg_fmt = "ticket refused: {why}"


def host_key(host_token: str) -> bytes:
    """The ticket key of a host: SHA-256 of its token (what the coordinator stores for the host)."""
    return hashlib.sha256(host_token.encode()).digest()


def _mac(key: bytes, context: bytes, scope: str, expires: int) -> str:
    return hmac.new(key, context + f"{scope}|{expires}".encode(), hashlib.sha256).hexdigest()


def sign(key: bytes, context: bytes, scope: str, expires: int) -> str:
    """A ticket for `scope` of the use `context`, valid until `expires` (unix seconds)."""
    return f"{expires}.{_mac(key, context, scope, expires)}"


def verify(key: bytes, context: bytes, scope: str, ticket: str, now: float, *, lifetime: float,
           refused: type[TicketRefused], what: str) -> None:
    """Raise `refused` unless `ticket` was signed with `key` for `scope` of `context` and is valid at `now`, within
    `SKEW` (it is signed for `lifetime` seconds at most); `what` names the scope in the refusal ("not issued for
    <what> on this host")."""
    expires_text, _, mac = ticket.partition(".")
    if not (expires_text.isascii() and expires_text.isdigit()) or len(expires_text) > 12:  # "²" is a digit too
        raise refused(why="malformed")
    expires = int(expires_text)
    if not hmac.compare_digest(mac.encode("ascii", "replace"), _mac(key, context, scope, expires).encode()):
        raise refused(why=f"not issued for {what} on this host")
    if expires + SKEW < now:
        raise refused(why=f"expired {now - expires:.0f} s ago by this host's clock")
    if expires - now > lifetime + SKEW:
        raise refused(why=f"it expires {expires - now:.0f} s from now by this host's clock, later than one lasts "
                      f"({lifetime:.0f} s): this host's clock is behind the coordinator's by more than {SKEW} s")
