"""kvmagent's expected failures: the agent logs, counts and retries them; anything else is a bug.

Every failure the agent can meet in normal operation (libvirtd away or refusing, a bridge it cannot
build, a spec this host cannot realize, a dataplane that did not converge) is a `KvmAgentError`.
The pipeline (`kvmagent/agent.py`) retries these with capped backoff; an exception of any other
class escaping a component is a bug and ends the process (`agentkit/supervise.py`).
"""

from __future__ import annotations

from typing import Any

from agentkit.errors import HostStackError


class KvmAgentError(HostStackError):
    """Base of the agent's expected failures."""

    code = "kvmagent"


class DriverError(KvmAgentError):
    """A libvirt operation failed (message names the operation and libvirt's reason)."""

    code = "libvirt"

    def __init__(self, message: str, libvirt_code: int = 0, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.libvirt_code = libvirt_code


class NoDomain(DriverError):
    """The domain does not exist (any more)."""

    code = "no_domain"


class NotListed(KvmAgentError):
    """The host's domains have not been listed since the agent started (libvirtd not reached yet)."""

    code = "not_listed"


class BridgeError(KvmAgentError):
    """An L2's bridge could not be realized (missing uplink, kernel without VLAN support...)."""

    code = "bridge"


class SpecError(KvmAgentError):
    """The spec cannot be realized on this host (e.g. a NIC's L3/L2 is not in the host stream)."""

    code = "unrealizable"


class DataplaneError(KvmAgentError):
    """A dataplane converged only in part (e.g. some EIP pairs); the rest is retried."""

    code = "dataplane"


class StorageError(KvmAgentError):
    """Primary storage could not do what its desired state asks (the message names storage, host and path)."""

    code = "storage"


class StorageUnavailable(StorageError):
    """A storage's directory is not usable on this host (a shared mount point not mounted, a full or
    read-only filesystem): VMs with a volume there cannot start here."""

    code = "storage_unavailable"


class PathEscapes(StorageError):
    """A disk path leaves the directory it is confined to (`..`, an absolute path elsewhere, a symlink)."""

    code = "path_escapes"


class VolumeNotReady(StorageError):
    """A VM needs a volume (or a cached ISO) that is not made yet, or failed: retried when it changes."""

    code = "volume_not_ready"


class ImageFetchError(StorageError):
    """An image could not be fetched or is not what the image store promised (checksum, size, format)."""

    code = "image_fetch"


class VolumeBusy(StorageError):
    """The operation rewrites files a running VM has open (revert, deleting a snapshot under it): stop it first."""

    code = "volume_busy"
