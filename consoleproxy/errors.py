"""Expected failures of the console proxy: every one names what was refused and why.

A refused page request answers with the HTTP status and the error envelope; a refused websocket is
accepted and closed at once with code 4000 + that status and the message as reason, so a page can say why.
"""

from __future__ import annotations

from agentkit import errors as base
from agentkit.errors import Forbidden, HostStackError, Unauthorized, Unavailable


class ConsoleProxyError(HostStackError):
    pass


class TokenMissing(ConsoleProxyError, Unauthorized):
    code = "token_missing"
    msg_fmt = "a console token is required (?token=...)"


class TokenUnknown(ConsoleProxyError, Forbidden):
    code = "token_unknown"
    msg_fmt = "unknown console token"


class TokenExpired(ConsoleProxyError, Forbidden):
    code = "token_expired"
    msg_fmt = "console token expired {ago:.0f} s ago; ask for a new console URL"


class TokenMismatch(ConsoleProxyError, Forbidden):
    code = "token_mismatch"
    msg_fmt = "this token opens the {granted} console of VM {granted_vm}, not the {kind} console of VM {vm}"


class TooManySessions(ConsoleProxyError):
    code, status = "too_many_sessions", 429
    msg_fmt = "this console token has {limit} sessions open, as many as one may; close one or ask for a new URL"


class TooManyVmSessions(ConsoleProxyError):
    code, status = "too_many_vm_sessions", 429
    msg_fmt = "VM {vm} has {limit} console sessions open through this proxy, as many as one may; close one"


class TooManyFailedTokens(ConsoleProxyError):
    code, status = "too_many_failed_tokens", 429
    msg_fmt = ("too many refused console tokens from {source} ({failures} per {window:g} s); try again in {wait} s, "
               "with a new console URL")


class CoordinatorUnavailable(ConsoleProxyError, Unavailable):
    code = "coordinator_unavailable"
    msg_fmt = "cannot check the token at the coordinator: {why}"


class CoordinatorRefused(ConsoleProxyError, base.RemoteError):
    """What the coordinator refused of a user's token (its VM is gone, a token of no valid shape), passed on
    with the coordinator's status and code."""


class ConsoleUnreachable(ConsoleProxyError, Unavailable):
    code = "console_unreachable"
    msg_fmt = "the {kind} console of VM {vm} cannot be reached: {why}"
