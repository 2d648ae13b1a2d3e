"""Domain errors shared by every HostStack package, and the one error envelope that carries them.

Expected failures are instances of `HostStackError` (or a subclass): a stable `code`, the HTTP
`status` an edge answers with, a message built from `msg_fmt` and the kwargs (kept for callers), and
the request `field` at fault. Each package subclasses these for its own codes (os-vif style); the
HTTP edges translate them with `body()` and `status`. Anything else that escapes is a bug.
"""

from __future__ import annotations

from typing import Any, ClassVar


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The envelope every listener answers errors with: `{"error": {"code", "message", "field"}}`."""
    return {"error": {"code": code, "message": message, "field": field}}


class HostStackError(Exception):
    """Base of every expected failure: `msg_fmt` filled from the kwargs, or an explicit message."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    msg_fmt: ClassVar[str] = "{message}"

    def __init__(self, message: str | None = None, *, field: str | None = None, **kwargs: Any):
        self.field = field
        self.kwargs = kwargs
        super().__init__(message if message is not None else self.msg_fmt.format(**kwargs))

    @property
    def message(self) -> str:
        return str(self)

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.field)


class Invalid(HostStackError):
    code, status = "invalid", 400


class Unauthorized(HostStackError):
    code, status = "unauthorized", 401
    msg_fmt = "missing or wrong bearer token"


class Forbidden(HostStackError):
    code, status = "forbidden", 403


class NotFound(HostStackError):
    code, status = "not_found", 404
    msg_fmt = "{what} {ident} does not exist"


class Conflict(HostStackError):
    code, status = "conflict", 409


# Conflicts several packages answer with one code (the coordinator passes a cephagent's on as it is): each
# package subclasses them with its own message.
class InUse(Conflict):
    code = "in_use"


class AlreadyExists(Conflict):
    code = "already_exists"


class NotReady(Conflict):
    code = "not_ready"


class HasDependants(Conflict):
    code = "has_dependants"


class SnapshotProtected(Conflict):
    code = "snapshot_protected"


class TooLarge(HostStackError):
    code, status = "too_large", 413


class Unavailable(HostStackError):
    code, status = "unavailable", 503


class RemoteError(HostStackError):
    """An error another HostStack process answered, rebuilt by its client with that process's code and status."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message, field=field)
        self.remote_code, self.remote_status = code, status

    @property
    def code(self) -> str:  # type: ignore[override]
        return self.remote_code

    @property
    def status(self) -> int:  # type: ignore[override]
        return self.remote_status
