"""Wire models shared by the coordinator and the agents.

A host's desired state is a flat map of stream keys to whole objects (see `stream_key_*`); the
coordinator renders these objects, the agents consume them. Observed state flows back as
`ObservedEvent`s. Everything here is plain data: no I/O.
"""

from __future__ import annotations

import copy
import ipaddress
import posixpath
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agentkit import SESSION_PATTERN
from agentkit.addr import check_host_address
from agentkit.consoles import KINDS, ConsoleKind
from agentkit.paths import FilePath


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
Short = Annotated[str, Field(min_length=1, max_length=128)]


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
    """A raw qcow2 path (the expert option): relative to the directory of storage `storage_uuid` (and
    confined to it), or without one relative to the agent's `volume_dir` (absolute: inside its file roots)."""

    kind: Literal["file"] = "file"
    path: FilePath
    backing: FilePath | None = None
    backing_format: Literal["raw", "qcow2"] = Field("raw", description="the backing file's format, never guessed "
                                                    "(a raw image can look like a qcow2 naming any backing file)")
    size_bytes: int = Field(default=1 << 30, gt=0, le=1 << 50)
    storage_uuid: Ident | None = None


class VolumeDisk(Wire):
    """A volume of a LocalStorage or SharedMountPoint primary storage (its `volume/<uuid>` item, with the
    `VolumeSpec`'s uuid): the host's storage component knows the file it currently lives in."""

    kind: Literal["volume"] = "volume"
    storage_uuid: Ident


class RbdDisk(Wire):
    kind: Literal["rbd"] = "rbd"
    pool: Short
    image: Short
    monitors: list[Annotated[str, Field(min_length=1, max_length=300)]] = Field(max_length=16)
    user: Short = "admin"
    secret_uuid: Short
    fsid: Short | None = None


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
    path: FilePath | None = None
    image: ImageRef | None = None
    storage_uuid: Ident | None = None

    @model_validator(mode="after")
    def _one_source(self) -> IsoSpec:
        if (self.path is None) == (self.image is None) or (self.image is None) != (self.storage_uuid is None):
            raise ValueError("an ISO is either a path, or an image with the storage that caches it")
        return self


class KernelBoot(Wire):
    """Direct kernel boot (used by the tiny guest image; also what some operators run)."""

    kernel: FilePath
    initrd: FilePath | None = None
    cmdline: str = Field("", max_length=4096, pattern=r"^[\x20-\x7e]*$")


class LiveMigration(Wire):
    """The running VM moves to host `host` (a VM on shared storage): its source host's libvirtd sends it
    peer-to-peer to the target's (`uri`), qemu's memory straight to `address`."""

    id: Ident
    host: Ident
    uri: str = Field(max_length=512, description="the target's libvirtd, e.g. qemu+tls://10.0.0.2/system")
    address: str = Field(max_length=255, description="the target host's address (qemu's migration stream)")
    prepared: bool = Field(False, description="the target applied what the VM needs before it runs there (its "
                           "bridges, anti-spoofing, EIPs staged): the source starts sending it only then")
    released: bool = Field(False, description="the source stopped answering for it (its EIPs withdrawn)")
    arrived: bool = Field(False, description="it runs on the target")
    abort: bool = Field(False, description="called off once the target prepared: the source sends no more (and "
                        "aborts a send under way); the move ends once it reports the VM `kept`, unless it arrived")

    @property
    def ready(self) -> bool:
        """May the source start sending the VM? A move recorded by a coordinator older than `prepared` (its
        record has no such key) never gets it: that one starts at once, as it did then."""
        return self.prepared or "prepared" not in self.model_fields_set


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
    migrate_to: LiveMigration | None = Field(None, description="the source host's copy of a VM moving live")
    incoming: Ident | None = Field(None, description="the target host's copy of a VM moving live here (the "
                                   "migration's id): nothing is defined, started or removed until it is its own")

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
        return storage_path(url)


def storage_path(url: str) -> str:
    """A primary storage's `url`, checked: the one rule for it wherever it is given."""
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


class VolumeMigration(Wire):
    """A LocalStorage volume moving here from `source_host` (docs/storage.md, volume migration): this host
    fills its image cache, pulls every file of the volume from the source's agent (a ticket from the
    coordinator), verifies them and reports `migration` Verified; the source keeps its copy until then."""

    id: Ident
    source_host: Ident


class StoredVolumeSpec(Wire):
    """A volume on file-based primary storage (`volume/<uuid>`), streamed to the one host that works on
    it. With `image`: a qcow2 overlay on the cached image (a root volume, or a data volume from a
    DataVolumeTemplate); else blank. Never removed by absence: `deleted` removes its files. With
    `migrate_from` (streamed to a migration's target) the files are copied from another host, not made."""

    uuid: Ident
    storage_uuid: Ident
    size_bytes: int = Field(gt=0, description="virtual size; an image's volume is at least the image's")
    image: ImageRef | None = None
    snapshots: list[SnapshotSpec] = Field([], description="a snapshot left out is deleted (merged into the rest)")
    revert: Revert | None = None
    exports: list[ExportSpec] = []
    deleted: bool = False
    migrate_from: VolumeMigration | None = None


class ObservedEvent(Wire):
    """One observed fact, journaled by the agent and applied by the coordinator idempotently."""

    seq: int = Field(ge=1)
    kind: str = Field(pattern=r"^[a-z]{1,32}$")
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    body: dict[str, Any]
    at: float


OBSERVED_ERROR_MAX = 1024  # characters of a VM's error message (the agent truncates longer ones): 100 events,
# even escaped to 6 bytes a character, stay under the API's 1 MiB body limit


def _ipv4(text: str) -> str:
    ipaddress.IPv4Address(text)  # ValueError names the text
    return text


class Observed(BaseModel):
    """Base of an observed event's body, per kind: checked by the coordinator where it is written (a body
    it could not read back would break every reader), strictly, as it came in JSON."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ConsoleObserved(Observed):
    """A running VM's consoles as its agent reports them (kvmagent/libvirt_driver.py `console_from_xml`): its
    graphics protocol and every console kind the agent's tunnel reaches (coordinator/domain/consoles.py)."""

    protocol: ConsoleMode | None = None
    kinds: list[ConsoleKind] = Field(min_length=1, max_length=len(KINDS))


class VmObserved(Observed):
    """Kind `vm`, id the VM's uuid (kvmagent/vms/observe.py `report_body`)."""

    state: Literal["Running", "Stopped", "Paused", "Crashed", "Unknown", "Destroyed"]
    console: ConsoleObserved | None = None
    boot_order: list[Literal["HardDisk", "CdRom"]] | None = Field(None, max_length=2)
    reboot_seq: int | None = Field(None, ge=0, description="the last reboot request (VmSpec.reboot_seq) applied")
    applied: int | None = Field(None, ge=0, description="the spec generation whose desired state the agent last "
                                "enforced or saw met (what `?wait=` waits for)")
    installed: bool = Field(False, description="an ISO install switched boot_order from the spec's of `generation`")
    drift: bool = False
    generation: int | None = Field(None, ge=0)
    error: str | None = Field(None, max_length=OBSERVED_ERROR_MAX)
    migrated: Ident | None = Field(None, description="the source host: the domain stopped here for the target in "
                                   "this live migration, its EIPs withdrawn")
    arrived: Ident | None = Field(None, description="the target host: the domain of this live migration runs here")
    prepared: Ident | None = Field(None, description="the target host: it applied what the VM of this live "
                                   "migration needs before it runs here")
    kept: Ident | None = Field(None, description="the source host: this live migration sends no more and the VM stays "
                               "here: called off, it runs here; or it stopped here before it was sent (`state`)")


class LeaseObserved(Observed):
    """Kind `lease`, id the NIC's uuid (flatnet's DHCP server)."""

    state: Literal["bound", "released", "declined"]
    vm_uuid: Short
    l3_uuid: Short
    mac: Mac
    ip: Annotated[str, AfterValidator(_ipv4)]


class CapacityObserved(Observed):
    total: int = Field(ge=0)
    available: int = Field(ge=0)
    used: int = Field(ge=0)


class StorageObserved(Observed):
    """Kind `storage`, id `<storage uuid>.<host uuid>`: one storage as one host sees it
    (kvmagent/storage/reports.py `storage_body`)."""

    storage_uuid: Ident
    type: Literal["LocalStorage", "SharedMountPoint"]
    url: str = Field(max_length=4096)
    state: Literal["Ready", "Unavailable"]
    error: str | None = Field(None, max_length=OBSERVED_ERROR_MAX)
    peers: list[Short] = Field([], max_length=4096)
    capacity: CapacityObserved | None = None
    downloads: dict[Ident, Annotated[int, Field(ge=0)]] = Field({}, max_length=1024)


class ExportObserved(Observed):
    image_uuid: Ident
    volume_uuid: Ident
    snapshot_uuid: Ident | None = None
    format: Literal["qcow2"]
    sha256: Sha256
    size: int = Field(ge=0)
    virtual_size: int = Field(ge=0)
    path: str = Field(max_length=4096)
    uploaded: bool = Field(False, description="sent to its image store (the host keeps it until the export is "
                           "dropped)")


class VolumeObserved(Observed):
    """Kind `volume`, id the volume's uuid (kvmagent/storage/reports.py `volume_body`)."""

    storage_uuid: Ident
    state: Literal["Creating", "Ready", "Error", "Deleted"]
    error: str | None = Field(None, max_length=OBSERVED_ERROR_MAX)
    size: int | None = Field(None, ge=0)
    used: int | None = Field(None, ge=0)
    path: str | None = Field(None, max_length=4096)
    snapshots: list[Ident] | None = Field(None, max_length=4096)
    revert_seq: int | None = Field(None, ge=0)
    image_uuid: Ident | None = None
    fetched: int | None = Field(None, ge=0)
    exports: dict[Ident, ExportObserved] | None = Field(None, max_length=1024)


class MigrationObserved(Observed):
    """Kind `migration`, id the volume's uuid: its migration `id` as the target host sees it (Waiting for the
    image cache, Copying with `done` of `total` bytes, Verified with each file's sha256, or Error)."""

    id: Ident
    state: Literal["Waiting", "Copying", "Verified", "Error"]
    done: int = Field(0, ge=0)
    total: int = Field(0, ge=0)
    error: str | None = Field(None, max_length=OBSERVED_ERROR_MAX)
    files: dict[Ident, Sha256] = Field({}, max_length=4096)


COMPONENTS_MAX = 32  # components an agent's health may name


class HealthObserved(Observed):
    """Kind `health`, id the host's uuid: the components of its agent whose last pass failed, each with its
    error (kvmagent/agent.py); none failing: healthy. Sent when that changes, once after the agent starts and
    at every (re)connect."""

    errors: dict[Annotated[str, Field(pattern=r"^[a-z]{1,32}$")], Annotated[str, Field(max_length=OBSERVED_ERROR_MAX)]
                 ] = Field({}, max_length=COMPONENTS_MAX)


OBSERVED_KINDS: dict[str, type[Observed]] = {"vm": VmObserved, "lease": LeaseObserved, "storage": StorageObserved,
                                             "volume": VolumeObserved, "migration": MigrationObserved,
                                             "health": HealthObserved}


class ObservedBatch(Wire):
    events: list[ObservedEvent] = Field(max_length=1000)


class HostFacts(Wire):
    """What an agent reports about its host on connect (counts are never negative)."""

    hostname: str = Field("", max_length=253)
    cpus: int = Field(0, ge=0, le=1 << 20)
    memory_mb: int = Field(0, ge=0, le=1 << 40)
    free_memory_mb: int = Field(0, ge=0, le=1 << 40)
    agent_version: str = Field("", max_length=100)
    agent_session: str | None = Field(None, pattern=SESSION_PATTERN)  # agentkit.SESSION; None: an older agent
    versions: dict[str, Annotated[str, Field(max_length=200)]] = Field({}, max_length=64)
    address: Annotated[str, AfterValidator(check_host_address)] | None = None


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


class Held(NamedTuple):
    """A desired item this agent cannot read (invalid to its models) and never had a valid value of: its
    object is left as it is, neither made, changed nor removed, until a valid value or its delete arrives.
    An agent older than its coordinator may find values it rejects (a new member of a choice, a bound
    widened); taking them for absent would destroy what they describe (a VM's running domain)."""

    reason: str

    @classmethod
    def of(cls, error: ValueError) -> Held:
        """Held for `error`, said in one line: each field's fault, as pydantic names it."""
        if isinstance(error, ValidationError):
            return cls("; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in error.errors()))
        return cls(str(error))


def parse_stream_item(key: str, value: object) -> tuple[Wire | object, list[str]]:
    """Validate a stream value by its key's kind (`config/*` values stay plain JSON), and name the fields left
    out: those this code does not know. A newer coordinator writes them during an upgrade, before this agent
    is upgraded too (older code reads past new fields: docs/operations.md), and an agent that took such a value
    for an invalid one would treat the object as absent (a VM's domain destroyed). Any other fault is the
    value's: ValueError."""
    model = STREAM_KINDS.get(key.split("/", 1)[0])
    if model is None:
        return value, []
    try:
        return model.model_validate(value), []
    except ValidationError as e:
        newer = [err["loc"] for err in e.errors() if err["type"] == "extra_forbidden"]
        if not newer or len(newer) < e.error_count():
            raise
    return model.model_validate(_without(value, newer)), [".".join(map(str, loc)) for loc in newer]


def _without(value: object, locations: list[tuple[int | str, ...]]) -> object:
    """A copy of `value` without the fields at `locations` (pydantic's: a union's tag may stand between a field
    and its parent, it names no key)."""
    value = copy.deepcopy(value)
    for *path, name in locations:
        node = value
        for part in path:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
        if isinstance(node, dict):
            node.pop(name, None)
    return value
