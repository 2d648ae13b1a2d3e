"""Wire models shared by the coordinator and the agents.

A host's desired state is a flat map of stream keys to whole objects (see `stream_key_*`); the
coordinator renders these objects, the agents consume them. Observed state flows back as
`ObservedEvent`s. Everything here is plain data: no I/O.
"""

from __future__ import annotations

import ipaddress
import posixpath
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Wire(BaseModel):
    """Base of every wire object: unknown fields are kept out, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=False)


class Service(StrEnum):
    DHCP = "DHCP"
    DNS = "DNS"
    USERDATA = "Userdata"
    EIP = "EIP"


class VmState(StrEnum):
    RUNNING = "Running"
    STOPPED = "Stopped"
    PAUSED = "Paused"
    CRASHED = "Crashed"
    UNKNOWN = "Unknown"
    DESTROYED = "Destroyed"


class BootDevice(StrEnum):
    HARDDISK = "HardDisk"
    CDROM = "CdRom"


CpuMode = Literal["none", "host-model", "host-passthrough"]
CacheMode = Literal["none", "writeback", "writethrough"]
ConsoleMode = Literal["vnc", "spice"]
ImdsMode = Literal["optional", "required"]
Mac = Annotated[str, Field(pattern=r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")]


class IpRange(Wire):
    start: str
    end: str


class L2Spec(Wire):
    """A physical (optionally VLAN-tagged) layer-2 segment; the agent owns its bridge."""

    uuid: str
    name: str
    physical_interface: str
    vlan: int | None = Field(default=None, ge=1, le=4094)

    @property
    def bridge(self) -> str:
        """Linux bridge name for this L2 on every host (15-char limit)."""
        return f"hsbr{self.uuid[:8]}"

    @property
    def uplink(self) -> str:
        """The device enslaved to the bridge: the VLAN sub-interface or the physical one."""
        if self.vlan is None:
            return self.physical_interface
        return f"hsv{self.uuid[:6]}.{self.vlan}"


class L3Spec(Wire):
    """An IPv4 subnet on an L2, with the flat network services it offers."""

    uuid: str
    name: str
    l2_uuid: str
    cidr: str
    gateway: str | None = None
    ip_ranges: list[IpRange] = []
    dns_servers: list[str] = []
    domain: str | None = None
    mtu: int = Field(default=1500, ge=576, le=9216)
    services: list[Service] = []
    dhcp_address: str | None = None
    imds: ImdsMode = "optional"
    public: bool = False

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr)


class EipBinding(Wire):
    uuid: str
    vip: str
    public_l3_uuid: str


class NicSpec(Wire):
    uuid: str
    l3_uuid: str
    mac: Mac
    ip: str
    default: bool = False
    device_index: int = 0
    eip: EipBinding | None = None

    @property
    def tap(self) -> str:
        return f"hst{self.uuid[:8]}"


# Names that become file names on a host (volumes, images, storages, snapshots): no path syntax at all.
Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class FileDisk(Wire):
    """A raw qcow2 path (the expert option): relative to the storage `storage_uuid`'s directory, or to the
    agent's `volume_dir` without one; confined there (an absolute path must lie inside it too)."""

    kind: Literal["file"] = "file"
    path: str
    backing: str | None = None
    backing_format: Literal["raw", "qcow2"] = Field("raw", description="told to qemu-img, never probed")
    size_bytes: int = Field(default=1 << 30, gt=0)
    storage_uuid: Ident | None = None


class VolumeDisk(Wire):
    """A volume of a LocalStorage or SharedMountPoint primary storage (its `volume/<uuid>` item, with the
    `VolumeSpec`'s uuid): the host's storage component knows the file it currently lives in."""

    kind: Literal["volume"] = "volume"
    storage_uuid: Ident


class RbdDisk(Wire):
    kind: Literal["rbd"] = "rbd"
    pool: str
    image: str
    monitors: list[str]
    user: str = "admin"
    secret_uuid: str
    fsid: str | None = None


class VolumeSpec(Wire):
    uuid: str
    role: Literal["root", "data"] = "data"
    disk: Annotated[FileDisk | RbdDisk | VolumeDisk, Field(discriminator="kind")]
    device_index: int = 0


class ImageRef(Wire):
    """An image as a host fetches it into a storage's image cache (with a read ticket the coordinator
    gives it, docs/storage.md): the bytes must be `size` long and hash to `sha256`."""

    uuid: Ident
    format: Literal["qcow2", "raw", "iso"]
    sha256: Sha256
    size: int = Field(ge=0, description="bytes of the file")


class IsoSpec(Wire):
    """A cdrom's media: an image (fetched into the cache of storage `storage_uuid`) or a raw path
    (confined like a `FileDisk` without storage)."""

    uuid: str
    path: str | None = None
    image: ImageRef | None = None
    storage_uuid: Ident | None = None

    @model_validator(mode="after")
    def _one_source(self) -> IsoSpec:
        if (self.path is None) == (self.image is None) or (self.image is None) != (self.storage_uuid is None):
            raise ValueError("an ISO is either a path, or an image with the storage that caches it")
        return self


class KernelBoot(Wire):
    """Direct kernel boot (used by the tiny guest image; also what some operators run)."""

    kernel: str
    initrd: str | None = None
    cmdline: str = ""


class VmSpec(Wire):
    uuid: str
    name: str
    cpu: int = Field(default=1, ge=1, le=256)
    memory_mb: int = Field(default=256, ge=32)
    state: Literal["Running", "Stopped", "Paused"] = "Running"
    nics: list[NicSpec] = []
    volumes: list[VolumeSpec] = []
    cdrom: IsoSpec | None = None
    boot_order: list[BootDevice] = [BootDevice.HARDDISK]
    kernel: KernelBoot | None = None
    cpu_mode: CpuMode | None = None
    cache_mode: CacheMode | None = None
    console_mode: ConsoleMode | None = None
    userdata: str | None = None
    ssh_keys: dict[str, str] = {}
    image_uuid: str | None = None
    generation: int = Field(default=0, ge=0, description="bumped by the coordinator on every change of the spec")
    reboot_seq: int = Field(default=0, ge=0, description="bumped by the API for each requested reboot")

    @field_validator("nics")
    @classmethod
    def _one_default(cls, nics: list[NicSpec]) -> list[NicSpec]:
        if nics and sum(n.default for n in nics) != 1:
            raise ValueError("exactly one NIC must be the default")
        return nics


class DnsRecord(Wire):
    """Name of one VM NIC on an L3, streamed to every host (DNS answers for all VMs)."""

    l3_uuid: str
    name: str
    ip: str


class CephSecretSpec(Wire):
    """A cephx key for libvirt, streamed to every host: define a ceph secret `uuid` holding `key`
    (the user `client.<user>`) so RbdDisks of cluster `fsid` with this `secret_uuid` can be opened."""

    uuid: str
    user: str
    key: str
    fsid: str


class PrimaryStorageSpec(Wire):
    """File-based primary storage a host is attached to (`storage/<uuid>`): `LocalStorage` is the
    directory `url` on every host of its cluster; `SharedMountPoint` the absolute path `url` where a
    shared POSIX filesystem is pre-mounted on every host."""

    uuid: Ident
    name: str
    type: Literal["LocalStorage", "SharedMountPoint"]
    url: str = Field(description="absolute, normalized path; not / itself")

    @field_validator("url")
    @classmethod
    def _absolute(cls, url: str) -> str:
        if url[:1] != "/" or url[:2] == "//" or url == "/" or "\0" in url or posixpath.normpath(url) != url:
            raise ValueError(f"{url!r} is not an absolute, normalized path (and not /)")
        return url


class SnapshotSpec(Wire):
    """A snapshot of a volume; `seq` orders it with the volume's other requests (snapshots, reverts)."""

    uuid: Ident
    seq: int = Field(ge=1)


class Revert(Wire):
    """Revert the volume to snapshot `snapshot_uuid`: request `seq` of the volume, done once."""

    seq: int = Field(ge=1)
    snapshot_uuid: Ident


class ExportSpec(Wire):
    """Make image `image_uuid` from the volume: a flattened qcow2 copy of a snapshot, or of the volume's
    current data (its VM stopped), for the image store to take."""

    image_uuid: Ident
    snapshot_uuid: Ident | None = None


class StoredVolumeSpec(Wire):
    """A volume on file-based primary storage (`volume/<uuid>`), streamed to the one host that works on
    it. With `image`: a qcow2 overlay on the cached image (a root volume, or a data volume from a
    DataVolumeTemplate); else blank. Never removed by absence: `deleted` removes its files."""

    uuid: Ident
    storage_uuid: Ident
    size_bytes: int = Field(gt=0, description="virtual size; an image's volume is at least the image's")
    image: ImageRef | None = None
    snapshots: list[SnapshotSpec] = Field([], description="a snapshot left out is deleted (merged into the rest)")
    revert: Revert | None = None
    exports: list[ExportSpec] = []
    deleted: bool = False


class ObservedEvent(Wire):
    """One observed fact, journaled by the agent and applied by the coordinator idempotently."""

    seq: int = Field(ge=1)
    kind: str
    id: str
    body: dict[str, Any]
    at: float


class ObservedBatch(Wire):
    events: list[ObservedEvent]


class HostFacts(Wire):
    hostname: str = ""
    cpus: int = 0
    memory_mb: int = 0
    free_memory_mb: int = 0
    agent_version: str = ""
    versions: dict[str, str] = {}
    address: str | None = None


# Stream keys: the relative key under a host's desired-state view. One builder per kind keeps
# the schema in one place for both ends.
def stream_key_l2(uuid: str) -> str:
    return f"l2/{uuid}"


def stream_key_l3(uuid: str) -> str:
    return f"l3/{uuid}"


def stream_key_vm(uuid: str) -> str:
    return f"vm/{uuid}"


def stream_key_dns(l3_uuid: str, nic_uuid: str) -> str:
    return f"dns/{l3_uuid}/{nic_uuid}"


def stream_key_config(name: str) -> str:
    return f"config/{name}"


def stream_key_ceph_secret(fsid: str) -> str:
    return f"cephsecret/{fsid}"


def stream_key_storage(uuid: str) -> str:
    return f"storage/{uuid}"


def stream_key_volume(uuid: str) -> str:
    return f"volume/{uuid}"


STREAM_KINDS: dict[str, type[Wire]] = {
    "l2": L2Spec,
    "l3": L3Spec,
    "vm": VmSpec,
    "dns": DnsRecord,
    "cephsecret": CephSecretSpec,
    "storage": PrimaryStorageSpec,
    "volume": StoredVolumeSpec,
}


def parse_stream_item(key: str, value: object) -> Wire | object:
    """Validate a stream value by its key's kind; `config/*` values stay plain JSON."""
    kind = key.split("/", 1)[0]
    model = STREAM_KINDS.get(kind)
    return model.model_validate(value) if model else value
