"""The coordinator's Ceph errors: shared bases, and the codes, statuses and messages the API has answered."""

from __future__ import annotations

import pytest

from agentkit import errors as base
from coordinator.domain.ceph import errors


@pytest.mark.parametrize("err, parent, code, status, message", [
    (errors.PoolNotFound(param="pool_name", pool="p"), base.Invalid, "pool_not_found", 400,
     "pool_name: Ceph pool 'p' does not exist"),
    (errors.UnknownReference(what="image", ident="i"), base.Invalid, "not_found", 400, "image i does not exist"),
    (errors.NotConfigured(), base.Conflict, "not_configured", 409, "Ceph storage needs the coordinator setting "
     "cephagent_token (the token the cephagents on the mon hosts were deployed with)"),
    (errors.LastMon(what="Ceph backup storage", name="bs1"), base.Conflict, "last_mon", 409,
     "Ceph backup storage bs1 needs at least one mon; add another before removing these"),
    (errors.Importing(name="img"), base.Conflict, "importing", 409,
     "image img is still being imported; delete it once it is Ready or Failed"),
    (errors.SnapshotProtected(name="v", snapshots="s"), base.Conflict, "snapshot_protected", 409,
     "volume v has protected snapshot(s) s; delete those snapshots first"),
    (errors.VolumeNotReady(name="v", status="Creating"), base.Conflict, "not_ready", 409, "volume v is Creating"),
    (errors.AgentUnauthorized(reason="r"), errors.CephError, "agent_unauthorized", 502,
     "a cephagent rejected the coordinator's cephagent_token: r"),
    (errors.AlreadyExists("x"), base.Conflict, "already_exists", 409, "x"),
    (errors.ClusterMismatch("x"), base.Conflict, "cluster_mismatch", 409, "x"),
    (errors.InUse("x"), base.Conflict, "in_use", 409, "x"),
    (errors.HasDependants("x"), base.Conflict, "has_dependants", 409, "x"),
    (errors.ImageNotReady("x"), base.Conflict, "image_not_ready", 409, "x"),
    (errors.CredentialUnreadable("x"), base.Conflict, "credential_unreadable", 409, "x"),
    (errors.AgentFailed(404, "image_not_found", "x", "name"), errors.CephError, "image_not_found", 404, "x"),
])
def test_codes_statuses_and_messages(err, parent, code, status, message):
    assert isinstance(err, errors.CephError) and isinstance(err, parent)
    assert (err.code, err.status, err.message) == (code, status, message)
    assert err.body()["error"]["code"] == code
