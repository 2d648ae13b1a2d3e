"""The coordinator's Ceph failures: `agentkit.errors` subclasses with the codes the API has always answered.

A cephagent's own failure reaches the caller as `AgentFailed`, with the agent's code and the status the
coordinator answers for it (an agent's bug or a rejected token is the coordinator's 502, not a 500).
"""

from __future__ import annotations

from agentkit import errors as base
from cephagent.errors import RemoteError
from coordinator.domain import errors as domain


class CephError(base.HostStackError):
    """Base of the coordinator-side Ceph failures."""


class AgentFailed(RemoteError, CephError):
    """A cephagent's failure as the coordinator's answer: `AgentFailed(status, code, message, field)`."""


class AgentUnauthorized(CephError):
    code, status = "agent_unauthorized", 502
    msg_fmt = "a cephagent rejected the coordinator's cephagent_token: {reason}"


class NotConfigured(CephError, domain.NotConfigured):
    msg_fmt = ("Ceph storage needs the coordinator setting cephagent_token (the token the cephagents on the mon "
               "hosts were deployed with)")


class NoAgentToken(NotConfigured):
    msg_fmt = ("no token for the cephagent on {host}: register it as a ceph host and deploy its agent (hs host "
               "add NAME {host} --kind ceph; hs deploy cephagent NAME), or set cephagent_token")


class AgentsDeploying(CephError, base.Conflict):
    """Mons' cephagents still being deployed when the wait ended: the same request made again goes on."""

    code = "agents_deploying"


class AgentDeployFailed(CephError, base.Invalid):
    """The deploy of a mon's cephagent failed (its cause from the deploy log): mostly the monUrl's credentials or
    address, the caller's to correct."""

    code = "agent_deploy_failed"


class UnknownReference(CephError, base.Invalid):
    """A uuid or name given in a request body (or a mon to remove) that names nothing: 400, not 404."""

    code = "not_found"
    msg_fmt = base.NotFound.msg_fmt


class AlreadyExists(CephError, base.AlreadyExists):
    pass


class ClusterMismatch(CephError, base.Conflict):
    code = "cluster_mismatch"


class PoolNotFound(CephError, base.Invalid):
    code = "pool_not_found"
    msg_fmt = "{param}: Ceph pool {pool!r} does not exist"


class LastMon(CephError, base.Conflict):
    code = "last_mon"
    msg_fmt = "{what} {name} needs at least one mon; add another before removing these"


class InUse(CephError, base.InUse):
    pass


class CredentialUnreadable(CephError, base.Conflict):
    code = "credential_unreadable"


class Importing(CephError, base.Conflict):
    code = "importing"
    msg_fmt = "image {name} is still being imported; delete it once it is Ready or Failed"


class HasDependants(CephError, base.HasDependants):
    pass


class SnapshotProtected(CephError, base.SnapshotProtected):
    msg_fmt = "volume {name} has protected snapshot(s) {snapshots}; delete those snapshots first"


class ImageNotReady(CephError, domain.ImageNotReady):
    pass


class VolumeNotReady(CephError, base.NotReady):
    msg_fmt = "volume {name} is {status}"
