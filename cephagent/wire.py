"""JSON models of the cephagent HTTP API, shared by the agent and its client (no rados import here).

Sizes are bytes. Pool, image and snapshot names are restricted to a safe subset of what Ceph allows
(no '/', '@' or spaces), so they can be used in specs like `pool/image@snap` unambiguously.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from agentkit.addr import check_source_url, host_port

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
MAX_SIZE = 1 << 50  # 1 PiB: a volume's or an imported image's bytes at most
# RBD takes any byte count, but a disk is whole sectors to qemu and its guest: a volume's size is refused between them
SECTOR = 512
Size = Annotated[int, Field(gt=0, le=MAX_SIZE, multiple_of=SECTOR)]
IMAGE_SNAPSHOT = "base"


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Capacity(Wire):
    total: int
    available: int
    used: int


class PoolInfo(Wire):
    """A pool's usage from `ceph df`: `used` is raw (with replicas), `available` is Ceph's max_avail."""

    name: str
    id: int
    stored: int
    used: int
    available: int
    total: int
    objects: int


class MonInfo(Wire):
    name: str
    rank: int
    addr: str  # host:port of the v1 (legacy) protocol when the mon has one, the form monUrls give
    addrs: list[str]
    in_quorum: bool


class Health(Wire):
    status: str
    checks: dict[str, str] = {}


class ClusterInfo(Wire):
    fsid: str
    health: Health
    mons: list[MonInfo]
    capacity: Capacity
    pools: list[PoolInfo]

    def mon_at(self, host: str, port: int) -> MonInfo | None:
        """The mon listening on host:port (any protocol), e.g. to match a monUrl against the monmap."""
        return next((m for m in self.mons if host_port(host, port) in m.addrs), None)

    def pool(self, name: str) -> PoolInfo | None:
        return next((p for p in self.pools if p.name == name), None)


class PoolRequest(Wire):
    name: Name
    must_exist: bool = False


class PoolResult(Wire):
    name: str
    created: bool


class ParentSpec(Wire):
    pool: Name
    image: Name
    snapshot: Name = IMAGE_SNAPSHOT

    @property
    def spec(self) -> str:
        return f"{self.pool}/{self.image}@{self.snapshot}"


class SnapshotInfo(Wire):
    name: str
    size: int
    protected: bool
    children: list[str] = []


class VolumeInfo(Wire):
    """An RBD image; `used` counts only the objects it owns (a fresh clone owns none)."""

    pool: str
    name: str
    size: int
    used: int
    parent: ParentSpec | None = None
    snapshots: list[SnapshotInfo] = []


class ImageInfo(Wire):
    """An imported image: an RBD image whose protected snapshot `snapshot` clones are made from."""

    pool: str
    name: str
    size: int
    snapshot: str = IMAGE_SNAPSHOT
    children: list[str] = []


class ImageImportRequest(Wire):
    pool: Name
    name: Name
    url: Annotated[str, Field(pattern=r"^(https?|file)://", max_length=4096), AfterValidator(check_source_url)]
    format: Literal["auto", "raw", "qcow2"] = "auto"


class CloneRequest(Wire):
    pool: Name
    name: Name
    source: ParentSpec
    size: Size | None = None


class CreateVolumeRequest(Wire):
    pool: Name
    name: Name
    size: Size


class ResizeRequest(Wire):
    size: Size
    allow_shrink: bool = False


class SnapshotRequest(Wire):
    name: Name
    protect: bool = False


class Progress(Wire):
    phase: str
    done: int = 0
    total: int | None = None

    @property
    def percent(self) -> float | None:
        return round(100 * self.done / self.total, 1) if self.total else None


class TaskError(Wire):
    code: str
    message: str


TaskState = Literal["queued", "running", "succeeded", "failed"]


class TaskInfo(Wire):
    id: str
    kind: str
    state: TaskState
    progress: Progress
    percent: float | None = None
    result: ImageInfo | None = None
    error: TaskError | None = None


class TaskRef(Wire):
    task_id: str


class CephSecret(Wire):
    """What a KVM host needs for a libvirt ceph secret and RbdDisk: user (without 'client.'), key, mons."""

    user: str
    key: str
    fsid: str
    monitors: list[str]
