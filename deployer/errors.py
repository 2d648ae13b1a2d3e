"""The deployer's expected failures. A host that fails is a `Result`, not an exception: these end a
whole deploy before it touches a host (a bad request, a wheelhouse that cannot be built) or are a
coordinator call that failed, which the deploy turns into that host's failed task."""

from __future__ import annotations

from agentkit.errors import HostStackError, Invalid


class InvalidRequest(Invalid, ValueError):
    """A deploy asked for something that cannot be (an unknown agent, two targets of one name).

    Also a ValueError, which is how callers that predate the domain errors catch it."""


class BuildError(HostStackError):
    """The controller could not build what it would install (no host was touched)."""

    code, status = "build_failed", 500


class CoordinatorError(HostStackError):
    """A call to the coordinator failed: `http_status` is its HTTP status (0: no answer) and `api_code`
    the code of its error envelope ("" when it sent none)."""

    code, status = "coordinator_failed", 502

    def __init__(self, message: str, http_status: int = 0, api_code: str = ""):
        super().__init__(message)
        self.http_status, self.api_code = http_status, api_code
