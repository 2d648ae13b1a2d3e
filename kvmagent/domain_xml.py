"""Render a libvirt domain XML from a `VmSpec`: pure functions, no libvirt import.

The rendered domain carries a `<metadata>` element in the HostStack namespace (`DomainMeta`):
it marks the domain as ours (foreign domains are never touched) and keeps what the reconciler
must remember across agent restarts (fingerprint of the last render, ISO-install boot switch,
adopted drift). Devices carry user aliases (`ua-vol-<uuid>`, `ua-nic-<uuid>`, `ua-cdrom`) so live
XML can be matched to the spec whatever target names libvirt or earlier attaches chose.
"""

from __future__ import annotations

import hashlib
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, NamedTuple, get_args

from agentkit.model import (
    BootDevice,
    CacheMode,
    ConsoleMode,
    CpuMode,
    FileDisk,
    IsoSpec,
    NicSpec,
    RbdDisk,
    VmSpec,
    VolumeSpec,
)

NS = "https://hoststack.dev/xmlns/kvmagent/vm/1"
NS_PREFIX = "hs"
CDROM_ALIAS = "ua-cdrom"
CDROM_TARGET = "hdc"
VOL_ALIAS = "ua-vol-"
NIC_ALIAS = "ua-nic-"
GLOBAL_CONFIG = {"cpu": "kvm.vm.cpuMode", "cache": "kvm.vm.cacheMode", "console": "kvm.vm.consoleMode"}
_UUID_NS = uuidlib.UUID("5b0e4a52-9a5e-4c43-9d3a-2f1d1c1e7a10")


@dataclass(frozen=True)
class Modes:
    cpu: CpuMode = "none"
    cache: CacheMode = "none"
    console: ConsoleMode = "vnc"


def resolve_modes(vm: VmSpec, configs: Mapping[str, object], defaults: Modes) -> Modes:
    """Per-VM value, else the global config value (`kvm.vm.cpuMode`...), else the agent default.

    An invalid global value is ignored (the default applies) rather than breaking every VM.
    """
    allowed = {"cpu": get_args(CpuMode), "cache": get_args(CacheMode), "console": get_args(ConsoleMode)}
    out = {}
    for f in fields(Modes):
        own = getattr(vm, f"{f.name}_mode")
        glob = configs.get(GLOBAL_CONFIG[f.name])
        if own is not None:
            out[f.name] = own
        elif glob in allowed[f.name]:
            out[f.name] = glob
        else:
            out[f.name] = getattr(defaults, f.name)
    return Modes(**out)


@dataclass
class DomainMeta:
    """What the agent keeps inside the domain (survives agent restarts; libvirt is the store)."""

    vm_uuid: str
    fingerprint: str = ""
    install: str = ""  # "pending": created from an ISO, still booting CdRom first; "done": switched
    install_order: str = ""  # the spec boot order the switch overrode, comma-separated
    intent: str = ""  # the desired state the agent last enforced or saw fulfilled...
    intent_generation: int | None = None  # ...for this spec generation (drift detection)
    taps: str = ""  # its NICs' tap names, comma-separated: filtered until the domain is gone
    reboot_seq: int | None = None  # the spec's last reboot request applied (None: domain older than reboots)

    @property
    def tap_names(self) -> tuple[str, ...]:
        return tuple(t for t in self.taps.split(",") if t)

    def with_taps(self, vm: VmSpec) -> DomainMeta:
        """This metadata recording the taps of `vm`'s NICs (what anti-spoofing keeps filtered)."""
        return replace(self, taps=",".join(sorted(nic.tap for nic in vm.nics)))

    def element(self, namespaced: bool = True) -> ET.Element:
        """`<hs:vm xmlns:hs=...>` spelled literally (ET would invent prefixes); plain `<vm>` for
        libvirt's setMetadata, which adds the namespace itself."""
        el = ET.Element(f"{NS_PREFIX}:vm", {f"xmlns:{NS_PREFIX}": NS}) if namespaced else ET.Element("vm")
        for f in fields(self):
            value = getattr(self, f.name)
            if value not in (None, ""):
                el.set(f.name.replace("_", "-"), str(value))
        return el

    def to_xml(self) -> str:
        """The plain element, as `virDomainSetMetadata` wants it."""
        return ET.tostring(self.element(namespaced=False), encoding="unicode")

    @classmethod
    def from_xml(cls, text: str) -> DomainMeta:
        el = ET.fromstring(text)
        known = {f.name for f in fields(cls)}
        a: dict[str, Any] = {k.replace("-", "_"): v for k, v in el.attrib.items() if "xmlns" not in k}
        a = {k: v for k, v in a.items() if k in known}
        for number in ("intent_generation", "reboot_seq"):
            if number in a:
                a[number] = int(a[number])
        return cls(**a)


@dataclass(frozen=True)
class NicNet:
    bridge: str
    mtu: int = 1500


@dataclass(frozen=True)
class DomainContext:
    """Everything besides the spec that shapes the domain (resolved by the reconciler)."""

    domain_type: str
    modes: Modes
    nets: Mapping[str, NicNet]  # NIC uuid -> where it plugs
    serial_log: str
    boot_order: Sequence[BootDevice]  # effective order (after an ISO install switched it)
    console_dir: str = "/run/hoststack/consoles"
    asset_tag: str = "hoststack.zstack.io"
    manufacturer: str = "HostStack"
    product: str = "HostStack VM"
    extra: Mapping[str, str] = field(default_factory=dict)


def console_socket(console_dir: str, vm_uuid: str, kind: str) -> str:
    """The unix socket of a VM's console `kind` (vnc, spice, serial)."""
    return f"{console_dir}/{vm_uuid}.{kind}.sock"


class Rendered(NamedTuple):
    xml: str
    fingerprint: str


def domain_uuid(vm_uuid: str) -> str:
    """The libvirt UUID of a VM: its own uuid when it is one, else a stable uuid5 of it."""
    try:
        return str(uuidlib.UUID(vm_uuid))
    except ValueError:
        return str(uuidlib.uuid5(_UUID_NS, vm_uuid))


def disk_targets(vm: VmSpec) -> dict[str, str]:
    """Volume uuid -> target dev: the root volume is vda, data volumes follow by device_index."""
    roots = [v for v in vm.volumes if v.role == "root"]
    data = sorted((v for v in vm.volumes if v.role != "root"), key=lambda v: (v.device_index, v.uuid))
    return {v.uuid: target_name(i) for i, v in enumerate(roots[:1] + data)}


def target_name(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return f"vd{letters}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def _monitor(addr: str) -> tuple[str, str]:
    """'1.2.3.4', '1.2.3.4:6789' or '[::1]:6789' -> (host, port)."""
    if addr.startswith("["):
        host, _, port = addr[1:].partition("]")
        return host, port.lstrip(":") or "6789"
    if addr.count(":") == 1:
        host, port = addr.split(":")
        return host, port
    return addr, "6789"


def disk_element(vol: VolumeSpec, target: str, cache: CacheMode, boot: int | None = None) -> ET.Element:
    """A virtio disk for a qcow2 file or an RBD image (cephx secret by uuid)."""
    d = vol.disk
    el = ET.Element("disk", {"type": "file" if isinstance(d, FileDisk) else "network", "device": "disk"})
    _sub(el, "driver", name="qemu", type="qcow2" if isinstance(d, FileDisk) else "raw", cache=cache)
    if isinstance(d, FileDisk):
        _sub(el, "source", file=d.path)
    elif isinstance(d, RbdDisk):
        auth = _sub(el, "auth", username=d.user)
        _sub(auth, "secret", type="ceph", uuid=d.secret_uuid)
        src = _sub(el, "source", protocol="rbd", name=f"{d.pool}/{d.image}")
        for mon in d.monitors:
            host, port = _monitor(mon)
            _sub(src, "host", name=host, port=port)
    _sub(el, "target", dev=target, bus="virtio")
    _sub(el, "serial", vol.uuid.replace("-", "")[:20])
    if boot is not None:
        _sub(el, "boot", order=str(boot))
    _sub(el, "alias", name=VOL_ALIAS + vol.uuid)
    return el


def cdrom_element(iso: IsoSpec | None, boot: int | None = None) -> ET.Element:
    """The always-present IDE cdrom; no <source> means empty tray."""
    el = ET.Element("disk", {"type": "file", "device": "cdrom"})
    _sub(el, "driver", name="qemu", type="raw")
    if iso is not None:
        _sub(el, "source", file=_iso_file(iso))
    _sub(el, "target", dev=CDROM_TARGET, bus="ide")
    _sub(el, "readonly")
    if boot is not None:
        _sub(el, "boot", order=str(boot))
    _sub(el, "alias", name=CDROM_ALIAS)
    return el


def with_cdrom_source(live_cdrom: str, iso: IsoSpec | None) -> str:
    """The live cdrom element with only its media changed (what updateDeviceFlags accepts)."""
    el = ET.fromstring(live_cdrom)
    for src in el.findall("source"):
        el.remove(src)
    if iso is not None:
        src = ET.Element("source", {"file": _iso_file(iso)})
        el.insert(1, src)
    return ET.tostring(el, encoding="unicode")


def _iso_file(iso: IsoSpec) -> str:
    if iso.path is None:
        raise ValueError(f"ISO {iso.uuid}: an image must be resolved to its cached file before rendering")
    return iso.path


def _boot_indexes(vm: VmSpec, order: Sequence[BootDevice]) -> dict[BootDevice, int]:
    has_root = any(v.role == "root" for v in vm.volumes)
    present = [d for d in order if d is BootDevice.CDROM or has_root]
    return {d: i for i, d in enumerate(dict.fromkeys(present), 1)}


def _os(dom: ET.Element, vm: VmSpec) -> None:
    os_ = _sub(dom, "os")
    _sub(os_, "type", "hvm", arch="x86_64", machine="pc")
    if vm.kernel:
        _sub(os_, "kernel", vm.kernel.kernel)
        if vm.kernel.initrd:
            _sub(os_, "initrd", vm.kernel.initrd)
        _sub(os_, "cmdline", vm.kernel.cmdline)
    _sub(os_, "smbios", mode="sysinfo")


def _sysinfo(dom: ET.Element, vm: VmSpec, ctx: DomainContext) -> None:
    """SMBIOS: cloud-init's ds-identify maps a chassis asset tag ending in .zstack.io to Ec2."""
    si = _sub(dom, "sysinfo", type="smbios")
    system = _sub(si, "system")
    _sub(system, "entry", ctx.manufacturer, name="manufacturer")
    _sub(system, "entry", ctx.product, name="product")
    _sub(system, "entry", vm.uuid, name="serial")
    chassis = _sub(si, "chassis")
    _sub(chassis, "entry", ctx.asset_tag, name="asset")


def _cpu(dom: ET.Element, ctx: DomainContext) -> None:
    """none: hypervisor default model; host-passthrough under TCG becomes 'maximum' (its TCG twin)."""
    mode: str = ctx.modes.cpu
    if mode == "none":
        return
    if mode == "host-passthrough" and ctx.domain_type == "qemu":
        mode = "maximum"
    _sub(dom, "cpu", mode=mode)


def nic_element(nic: NicSpec, net: NicNet) -> ET.Element:
    """A NIC's `<interface>`: in the domain, or attached alone to a running one."""
    iface = ET.Element("interface", type="bridge")
    _sub(iface, "mac", address=nic.mac)
    _sub(iface, "source", bridge=net.bridge)
    _sub(iface, "target", dev=nic.tap)
    _sub(iface, "model", type="virtio")
    if net.mtu != 1500:
        _sub(iface, "mtu", size=str(net.mtu))
    _sub(iface, "alias", name=NIC_ALIAS + nic.uuid)
    return iface


def _devices(dom: ET.Element, vm: VmSpec, ctx: DomainContext) -> None:
    dev = _sub(dom, "devices")
    boot = _boot_indexes(vm, ctx.boot_order)
    targets = disk_targets(vm)
    for vol in sorted(vm.volumes, key=lambda v: targets[v.uuid]):
        order = boot.get(BootDevice.HARDDISK) if vol.role == "root" else None
        dev.append(disk_element(vol, targets[vol.uuid], ctx.modes.cache, order))
    dev.append(cdrom_element(vm.cdrom, boot.get(BootDevice.CDROM)))
    for nic in sorted(vm.nics, key=lambda n: (n.device_index, n.uuid)):
        dev.append(nic_element(nic, ctx.nets[nic.uuid]))
    # Consoles listen on unix sockets only (reached through the agent's console tunnel); the serial
    # port is also logged to the file the serial log has always been.
    serial = _sub(dev, "serial", type="unix")
    _sub(serial, "source", mode="bind", path=console_socket(ctx.console_dir, vm.uuid, "serial"))
    _sub(serial, "log", file=ctx.serial_log, append="on")
    _sub(serial, "target", port="0")
    graphics = _sub(dev, "graphics", type=ctx.modes.console)
    _sub(graphics, "listen", type="socket", socket=console_socket(ctx.console_dir, vm.uuid, ctx.modes.console))
    video = _sub(dev, "video")
    _sub(video, "model", type="qxl" if ctx.modes.console == "spice" else "vga")
    _sub(dev, "controller", type="usb", model="none")
    _sub(dev, "memballoon", model="none")


def build(vm: VmSpec, ctx: DomainContext) -> ET.Element:
    """The domain without its metadata (what the fingerprint covers)."""
    dom = ET.Element("domain", type=ctx.domain_type)
    _sub(dom, "name", vm.uuid)
    _sub(dom, "uuid", domain_uuid(vm.uuid))
    _sub(dom, "title", vm.name)
    _sub(dom, "memory", str(vm.memory_mb), unit="MiB")
    _sub(dom, "vcpu", str(vm.cpu))
    _sysinfo(dom, vm, ctx)
    _os(dom, vm)
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _cpu(dom, ctx)
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    _devices(dom, vm, ctx)
    return dom


def render(vm: VmSpec, ctx: DomainContext, meta: DomainMeta) -> Rendered:
    """Full domain XML with `meta` (its fingerprint set to this render's) in <metadata>."""
    dom = build(vm, ctx)
    body = ET.tostring(dom, encoding="unicode")
    fp = hashlib.sha256(body.encode()).hexdigest()[:16]
    md = ET.Element("metadata")
    md.append(replace(meta, fingerprint=fp).element())
    dom.insert(3, md)
    ET.indent(dom)
    return Rendered(ET.tostring(dom, encoding="unicode"), fp)
