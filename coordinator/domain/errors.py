"""The coordinator's expected failures: one class per stable error code the API answers with.

Codes shared by several packages (`invalid`, `not_found`, `in_use`, ...) are agentkit's; these are the
coordinator's own. Domain code raises them; the HTTP edge turns any of them into the one error envelope.
A refusal that names the objects in its way names the first few (`first_few`).
"""

from __future__ import annotations

from agentkit.errors import Conflict, NotFound

SHOWN = 5  # objects a refusal names: enough to act on, while thousands would drown the message


def first_few(shown: list[str], total: int) -> str:
    """The names `shown` (the first SHOWN of `total` objects in the way) and how many more there are."""
    return ", ".join(shown) + (f" and {total - len(shown)} more" if total > len(shown) else "")


class MissingReference(NotFound):
    """An object a request names in its body does not exist: the request is at fault (400)."""

    status = 400


class Exists(Conflict):
    code = "exists"


class NotConfigured(Conflict):
    code = "not_configured"


class ImageNotReady(Conflict):
    code = "image_not_ready"


class Locked(Conflict):
    code = "locked"


class LockLost(NotFound):
    code = "lock_lost"


class IpInUse(Conflict):
    code = "ip_in_use"


class MacInUse(Conflict):
    code = "mac_in_use"
    msg_fmt = "MAC {mac} is already used by a NIC on L2 network {l2}"

    def __init__(self, message: str | None = None, *, field: str = "fixed_macs", **kwargs: object):
        super().__init__(message, field=field, **kwargs)


class IpExhausted(Conflict):
    code = "ip_exhausted"
    msg_fmt = "L3 network {name} ({uuid}) has no free IP address left"


class NoHost(Conflict):
    code = "no_host"


class InvalidState(Conflict):
    code = "invalid_state"


class NotRunning(Conflict):
    code = "not_running"


class NoService(Conflict):
    code = "no_service"


class InsufficientCapacity(Conflict):
    code = "insufficient_capacity"


class StorageUnusable(Conflict):
    """A primary storage cannot be used on a host (not reported yet, or a shared mount point not mounted)."""

    code = "storage_unavailable"
