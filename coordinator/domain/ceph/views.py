"""What the API shows of Ceph storage and volumes: records joined with their agents' live answers.

A storage's mon is Connected when its agent answers with the storage's fsid and the monmap has a mon
on `host:mon_port` in quorum; otherwise `reason` says why. Without live answers (`live=false`) only
the records are shown. Secrets never appear here: monUrls are redacted, passwords left out.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from agentkit.model import RbdDisk
from cephagent.errors import CephAgentError
from cephagent.wire import ClusterInfo, VolumeInfo
from coordinator.domain.ceph.agents import Survey
from coordinator.domain.ceph.records import MonRecord, StorageRecord, VolumeRecord

Status = Literal["Connected", "Disconnected"]


class MonView(BaseModel):
    url: str = Field(description="the monUrl with its password redacted")
    hostname: str
    mon_port: int
    ssh_port: int
    ssh_username: str
    status: Status | None = None
    in_quorum: bool | None = None
    mon_name: str | None = None
    reason: str | None = None


class PoolView(BaseModel):
    role: str
    name: str
    total: int | None = None
    available: int | None = None
    used: int | None = None
    stored: int | None = None
    objects: int | None = None


class CapacityView(BaseModel):
    total: int
    available: int
    used: int


class StorageView(BaseModel):
    uuid: str
    name: str
    type: Literal["CephBackupStorage", "CephPrimaryStorage"]
    zone: str
    fsid: str
    status: Status | None = None
    health: str | None = None
    mons: list[MonView]
    capacity: CapacityView | None = None
    pools: list[PoolView]
    ceph_user: str | None = None
    secret_uuid: str | None = None
    created_at: float


def _mon(mon: MonRecord, fsid: str, answer: ClusterInfo | CephAgentError | None) -> MonView:
    out = MonView(url=mon.redacted, hostname=mon.host, mon_port=mon.mon_port, ssh_port=mon.ssh_port,
                  ssh_username=mon.ssh_username)
    if answer is None:
        return out
    if isinstance(answer, CephAgentError):
        return out.model_copy(update={"status": "Disconnected", "reason": answer.message})
    if answer.fsid != fsid:
        reason = f"its cephagent reports fsid {answer.fsid}, not the storage's {fsid}"
        return out.model_copy(update={"status": "Disconnected", "reason": reason})
    info = answer.mon_at(mon.host, mon.mon_port)
    if info is None:
        reason = f"no mon of the cluster listens on {mon.addr}"
        return out.model_copy(update={"status": "Disconnected", "in_quorum": False, "reason": reason})
    return out.model_copy(update={"status": "Connected" if info.in_quorum else "Disconnected",
                                  "in_quorum": info.in_quorum, "mon_name": info.name,
                                  "reason": None if info.in_quorum else "not in quorum"})


def describe(rec: StorageRecord, survey: Survey | None) -> StorageView:
    """A storage; with its agents' answers (mon host -> cluster) its live state too."""
    mons = [_mon(m, rec.fsid, survey.get(m.host) if survey is not None else None) for m in rec.mons]
    info = next((a for a in (survey or {}).values() if isinstance(a, ClusterInfo) and a.fsid == rec.fsid), None)
    pools = []
    for role, name in rec.pools.items():
        stats = info.pool(name) if info else None
        figures = stats.model_dump(include={"total", "available", "used", "stored", "objects"}) if stats else {}
        pools.append(PoolView(role=role, name=name, **figures))
    out = StorageView(uuid=rec.uuid, name=rec.name, zone=rec.zone, fsid=rec.fsid, mons=mons, pools=pools,
                      type="CephBackupStorage" if rec.kind == "bs" else "CephPrimaryStorage",
                      ceph_user=rec.ceph_user, secret_uuid=rec.secret_uuid, created_at=rec.created_at)
    if survey is not None:
        out.status = "Connected" if any(m.status == "Connected" for m in mons) else "Disconnected"
        if info:
            out.health = info.health.status
            out.capacity = CapacityView(**info.capacity.model_dump())
    return out


class VolumeView(VolumeRecord):
    disk: RbdDisk = Field(description="pass as root_volume/data_volumes of POST /v1/vms or disk of POST "
                          "/v1/vms/{uuid}/volumes")
    rbd: VolumeInfo | None = Field(None, description="the agent's live view: size, used, parent, snapshots")
    rbd_error: str | None = None

    @classmethod
    def of(cls, vol: VolumeRecord, ps: StorageRecord, info: VolumeInfo | None = None,
           error: str | None = None) -> VolumeView:
        return cls(**vol.model_dump(), disk=vol.rbd_disk(ps), rbd=info, rbd_error=error)
