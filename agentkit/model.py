"""Wire models shared by the coordinator and the agents.

A host's desired state is a flat map of stream keys to whole objects (see `stream_key_*`); the
coordinator renders these objects, the agents consume them. Observed state flows back as
`ObservedEvent`s. Everything here is plain data: no I/O.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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


class FileDisk(Wire):
    kind: Literal["file"] = "file"
    path: str
    backing: str | None = None
    size_bytes: int = Field(default=1 << 30, gt=0)


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
    disk: Annotated[FileDisk | RbdDisk, Field(discriminator="kind")]
    device_index: int = 0


class IsoSpec(Wire):
    uuid: str
    path: str


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


STREAM_KINDS: dict[str, type[Wire]] = {
    "l2": L2Spec,
    "l3": L3Spec,
    "vm": VmSpec,
    "dns": DnsRecord,
    "cephsecret": CephSecretSpec,
}


def parse_stream_item(key: str, value: object) -> Wire | object:
    """Validate a stream value by its key's kind; `config/*` values stay plain JSON."""
    kind = key.split("/", 1)[0]
    model = STREAM_KINDS.get(kind)
    return model.model_validate(value) if model else value
