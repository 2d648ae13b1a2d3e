"""hs-ctl's expected failures: each a code and one line for the operator (the CLI prints it, exits 1)."""

from __future__ import annotations

from agentkit.errors import Conflict, HostStackError, Invalid, Unavailable


class CtlError(HostStackError):
    code = "ctl"


class BackupFailed(Unavailable):
    code = "backup_failed"


class CopyFailed(Unavailable):
    """A complete backup kept on the node that could not be copied to the directory meant to outlive it."""

    code = "backup_copy_failed"


class EtcdUnavailable(Unavailable):
    """etcd did not answer etcdctl (or its SRV records named no member)."""

    code = "etcd_unavailable"


class InvalidBackup(Invalid):
    """A backup file that must not be restored: missing, unreadable, or not what its checksum says."""

    code = "invalid_backup"


class RestoreFailed(CtlError):
    code = "restore_failed"


class ServiceFailed(CtlError):
    code = "service_failed"


class Busy(Conflict):
    code = "busy"
