"""Domain errors of the Ceph agent: each has a stable code, an HTTP status and a message naming the culprit.

They are `agentkit.errors` subclasses (a missing pool is a `NotFound`, a refused one a `Conflict`), so
every HTTP edge renders them with the one envelope. Callers (the HTTP layer, the coordinator through
`cephagent.client`) see these, never a raw rados/rbd exception. The client rebuilds an agent's answer
as a `RemoteError` from the `{"error": {...}}` body.
"""

from __future__ import annotations

from agentkit import errors as base


class CephAgentError(base.HostStackError):
    """Base of the agent's failures."""


class InvalidRequest(CephAgentError, base.Invalid):
    pass


class InvalidMonUrl(CephAgentError, base.Invalid):
    code = "invalid_mon_url"
    msg_fmt = "{where}: {problem}"


class Unauthorized(CephAgentError, base.Unauthorized):
    pass


class NotFound(CephAgentError, base.NotFound):
    pass


class PoolNotFound(NotFound):
    code = "pool_not_found"
    msg_fmt = "Ceph pool {pool!r} does not exist"


class ImageNotFound(NotFound):
    code = "image_not_found"
    msg_fmt = "RBD image {spec} does not exist"


class SnapshotNotFound(NotFound):
    code = "snapshot_not_found"
    msg_fmt = "snapshot {spec} does not exist"


class TaskNotFound(NotFound):
    code = "task_not_found"
    msg_fmt = "no task {task_id!r} (tasks are kept in memory only; re-submit after an agent restart)"


class Conflict(CephAgentError, base.Conflict):
    pass


class AlreadyExists(Conflict, base.AlreadyExists):
    msg_fmt = "RBD image {spec} already exists{detail}"


class HasDependants(Conflict, base.HasDependants):
    msg_fmt = "{spec} has {count} clone(s) depending on it: {dependants}; delete or flatten them first"


class SnapshotProtected(Conflict, base.SnapshotProtected):
    msg_fmt = "{spec} has protected snapshot(s) {snapshots}; delete those snapshots first"


class ImageInUse(Conflict, base.InUse):
    msg_fmt = "RBD image {spec} is open by {watchers} (a running VM?); stop it first"


class ImportInProgress(Conflict, base.InUse):
    msg_fmt = "RBD image {spec} is being imported by another client ({watchers}); ask again once that import has ended"


class FsidMismatch(Conflict):
    code = "fsid_mismatch"
    msg_fmt = "mons belong to different Ceph clusters: {detail}"


class TooManyTasks(CephAgentError):
    code, status = "too_many_tasks", 429
    msg_fmt = "{count} imports are queued or running on this cephagent already; ask again once some have ended"


class ImportFailed(CephAgentError):
    code, status = "import_failed", 422
    msg_fmt = "importing {spec} from {url}: {reason}"


class NotPermitted(CephAgentError):
    code = "ceph_not_permitted"
    msg_fmt = "the agent's cephx user {client} may not do this in pool {pool!r} ({reason}); give it the caps " \
              "docs/ceph.md names for client_name"


class ClusterUnavailable(CephAgentError, base.Unavailable):
    code = "cluster_unavailable"
    msg_fmt = "Ceph cluster unavailable: {reason}"


class RemoteError(CephAgentError, base.RemoteError):
    """An error answered by a cephagent, rebuilt by the client with the agent's code and status."""
