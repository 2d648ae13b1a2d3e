"""The cephagent's error classes: shared bases, stable codes and statuses, messages from their kwargs."""

from __future__ import annotations

import pytest

from agentkit import errors as base
from cephagent import errors


@pytest.mark.parametrize("err, parent, code, status, message", [
    (errors.InvalidRequest("size: too big", field="size"), base.Invalid, "invalid", 400, "size: too big"),
    (errors.InvalidMonUrl(where="mon_urls[0]", problem="no host"), base.Invalid, "invalid_mon_url", 400,
     "mon_urls[0]: no host"),
    (errors.Unauthorized(), base.Unauthorized, "unauthorized", 401, "missing or wrong bearer token"),
    (errors.PoolNotFound(pool="p"), base.NotFound, "pool_not_found", 404, "Ceph pool 'p' does not exist"),
    (errors.ImageNotFound(spec="p/i"), base.NotFound, "image_not_found", 404, "RBD image p/i does not exist"),
    (errors.SnapshotNotFound(spec="p/i@s"), base.NotFound, "snapshot_not_found", 404, "snapshot p/i@s does not exist"),
    (errors.TaskNotFound(task_id="t"), base.NotFound, "task_not_found", 404,
     "no task 't' (tasks are kept in memory only; re-submit after an agent restart)"),
    (errors.AlreadyExists(spec="p/i", detail=""), base.Conflict, "already_exists", 409, "RBD image p/i already exists"),
    (errors.HasDependants(spec="p/i", count=1, dependants="p/c"), base.Conflict, "has_dependants", 409,
     "p/i has 1 clone(s) depending on it: p/c; delete or flatten them first"),
    (errors.SnapshotProtected(spec="p/i", snapshots="s"), base.Conflict, "snapshot_protected", 409,
     "p/i has protected snapshot(s) s; delete those snapshots first"),
    (errors.ImageInUse(spec="p/i", watchers="w"), base.Conflict, "in_use", 409,
     "RBD image p/i is open by w (a running VM?); stop it first"),
    (errors.ImportInProgress(spec="p/i", watchers="w"), base.Conflict, "in_use", 409,
     "RBD image p/i is being imported by another client (w); ask again once that import has ended"),
    (errors.FsidMismatch(detail="d"), base.Conflict, "fsid_mismatch", 409, "mons belong to different Ceph clusters: d"),
    (errors.ImportFailed(spec="p/i", url="u", reason="r"), errors.CephAgentError, "import_failed", 422,
     "importing p/i from u: r"),
    (errors.TooManyTasks(count=100), errors.CephAgentError, "too_many_tasks", 429,
     "100 imports are queued or running on this cephagent already; ask again once some have ended"),
    (errors.NotPermitted(client="client.c", pool="p", reason="r"), errors.CephAgentError, "ceph_not_permitted", 500,
     "the agent's cephx user client.c may not do this in pool 'p' (r); give it the caps docs/ceph.md names for "
     "client_name"),
    (errors.ClusterUnavailable(reason="r"), base.Unavailable, "cluster_unavailable", 503,
     "Ceph cluster unavailable: r"),
    (errors.NotFound("ceph x: gone"), base.NotFound, "not_found", 404, "ceph x: gone"),
    (errors.Conflict("taken", field="name"), base.Conflict, "conflict", 409, "taken"),
    (errors.CephAgentError("ceph x failed"), base.HostStackError, "internal", 500, "ceph x failed"),
])
def test_codes_statuses_and_messages(err, parent, code, status, message):
    assert isinstance(err, errors.CephAgentError) and isinstance(err, parent)
    assert (err.code, err.status, err.message) == (code, status, message)
    assert err.body() == {"error": {"code": code, "message": message, "field": err.field}}


def test_kwargs_are_kept_for_callers():
    err = errors.FsidMismatch(field="mon_urls", detail="d", odd=["a"], expected="f")
    assert err.kwargs["odd"] == ["a"] and err.field == "mon_urls"


def test_remote_error_carries_the_agents_code_and_status():
    err = errors.RemoteError(404, "pool_not_found", "Ceph pool 'p' does not exist", "name")
    assert (err.code, err.status, err.field) == ("pool_not_found", 404, "name")
    assert err.body() == {"error": {"code": "pool_not_found", "message": "Ceph pool 'p' does not exist",
                                    "field": "name"}}
