"""Domain XML rendering (pure): what libvirt will be told. That libvirt accepts it: tests/functional."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from agentkit.model import BootDevice, FileDisk, IsoSpec, KernelBoot, NicSpec, RbdDisk, VmSpec, VolumeSpec
from kvmagent.domain_xml import (
    DomainContext,
    DomainMeta,
    Modes,
    NicNet,
    disk_targets,
    domain_uuid,
    render,
    resolve_modes,
    target_name,
    with_cdrom_source,
)

VM_UUID = "0a1b2c3d4e5f47a8b9c0d1e2f3a4b5c6"


def spec(**kw) -> VmSpec:
    base = dict(
        uuid=VM_UUID, name="web-1", cpu=2, memory_mb=512,
        nics=[NicSpec(uuid="nic00001aaaa", l3_uuid="l3a", mac="52:54:00:12:34:56", ip="198.18.0.10", default=True)],
        volumes=[VolumeSpec(uuid="vol-root", role="root", disk=FileDisk(path="/v/root.qcow2"))],
    )
    base.update(kw)
    return VmSpec(**base)


def ctx(vm: VmSpec, **kw) -> DomainContext:
    base = dict(domain_type="qemu", modes=Modes(), nets={n.uuid: NicNet("hsbr0000aaaa", 1500) for n in vm.nics},
                serial_log="/var/log/hs/x.log", boot_order=vm.boot_order)
    base.update(kw)
    return DomainContext(**base)


def parsed(vm: VmSpec, **kw) -> ET.Element:
    return ET.fromstring(render(vm, ctx(vm, **kw), DomainMeta(vm.uuid)).xml)


def test_nic_is_a_tap_on_the_l2_bridge():
    vm = spec()
    iface = parsed(vm, nets={"nic00001aaaa": NicNet("hsbr0000aaaa", 1400)}).find("devices/interface")
    assert iface.get("type") == "bridge"
    assert iface.find("source").get("bridge") == "hsbr0000aaaa"
    assert iface.find("target").get("dev") == vm.nics[0].tap
    assert iface.find("mac").get("address") == "52:54:00:12:34:56"
    assert iface.find("model").get("type") == "virtio"
    assert iface.find("mtu").get("size") == "1400"


def test_rbd_disk_has_every_monitor_and_the_ceph_secret():
    rbd = RbdDisk(pool="pool1", image="vol-1", monitors=["198.18.0.2", "198.18.0.3:3300", "[2001:db8::1]:6789"],
                  user="hs", secret_uuid="3a0e4a52-9a5e-4c43-9d3a-2f1d1c1e7a10")
    vm = spec(volumes=[VolumeSpec(uuid="vol-r", role="root", disk=rbd)])
    disk = parsed(vm).find("devices/disk[@device='disk']")
    assert disk.get("type") == "network"
    src = disk.find("source")
    assert (src.get("protocol"), src.get("name")) == ("rbd", "pool1/vol-1")
    assert [(h.get("name"), h.get("port")) for h in src.findall("host")] == [
        ("198.18.0.2", "6789"), ("198.18.0.3", "3300"), ("2001:db8::1", "6789")]
    assert disk.find("auth").get("username") == "hs"
    secret = disk.find("auth/secret")
    assert (secret.get("type"), secret.get("uuid")) == ("ceph", "3a0e4a52-9a5e-4c43-9d3a-2f1d1c1e7a10")


def test_cdrom_always_present_empty_or_with_iso():
    empty = parsed(spec()).find("devices/disk[@device='cdrom']")
    assert empty.find("source") is None and empty.find("target").get("dev") == "hdc"
    iso = parsed(spec(cdrom=IsoSpec(uuid="iso1", path="/isos/a.iso"))).find("devices/disk[@device='cdrom']")
    assert iso.find("source").get("file") == "/isos/a.iso"


def test_boot_order_is_per_device():
    vm = spec(cdrom=IsoSpec(uuid="iso1", path="/i.iso"), boot_order=[BootDevice.CDROM, BootDevice.HARDDISK])
    dom = parsed(vm)
    assert dom.find("devices/disk[@device='cdrom']/boot").get("order") == "1"
    assert dom.find("devices/disk[@device='disk']/boot").get("order") == "2"
    dom = parsed(vm, boot_order=[BootDevice.HARDDISK, BootDevice.CDROM])
    assert dom.find("devices/disk[@device='disk']/boot").get("order") == "1"
    assert dom.find("devices/disk[@device='cdrom']/boot").get("order") == "2"


def test_modes_per_vm_then_global_then_default():
    defaults = Modes("none", "none", "vnc")
    configs = {"kvm.vm.cpuMode": "host-model", "kvm.vm.cacheMode": "bogus", "kvm.vm.consoleMode": "spice"}
    assert resolve_modes(spec(), configs, defaults) == Modes("host-model", "none", "spice")
    assert resolve_modes(spec(cache_mode="writethrough", console_mode="vnc"), configs, defaults) == \
        Modes("host-model", "writethrough", "vnc")


def test_modes_render():
    dom = parsed(spec(), modes=Modes("host-model", "writethrough", "spice"))
    assert dom.find("cpu").get("mode") == "host-model"
    assert dom.find("devices/disk[@device='disk']/driver").get("cache") == "writethrough"
    assert dom.find("devices/graphics").get("type") == "spice"
    assert dom.find("devices/video/model").get("type") == "qxl"
    assert parsed(spec()).find("cpu") is None
    assert parsed(spec(), modes=Modes(cpu="host-passthrough")).find("cpu").get("mode") == "maximum"
    assert parsed(spec(), modes=Modes(cpu="host-passthrough"), domain_type="kvm").find("cpu").get("mode") == \
        "host-passthrough"


def test_smbios_makes_ds_identify_pick_ec2():
    dom = parsed(spec())
    assert dom.find("os/smbios").get("mode") == "sysinfo"
    assert dom.find("sysinfo/chassis/entry[@name='asset']").text.endswith(".zstack.io")
    assert dom.find("sysinfo/system/entry[@name='serial']").text == VM_UUID


def test_direct_kernel_boot_and_serial_log():
    vm = spec(kernel=KernelBoot(kernel="/k/vmlinux", initrd="/k/initrd.gz", cmdline="console=ttyS0"))
    dom = parsed(vm)
    assert (dom.findtext("os/kernel"), dom.findtext("os/initrd"), dom.findtext("os/cmdline")) == (
        "/k/vmlinux", "/k/initrd.gz", "console=ttyS0")
    serial = dom.find("devices/serial")
    assert (serial.get("type"), serial.find("log").get("file")) == ("unix", "/var/log/hs/x.log")


def test_disk_targets_root_first_then_by_index():
    data = [VolumeSpec(uuid=f"d{i}", role="data", device_index=i, disk=FileDisk(path=f"/v/{i}")) for i in (3, 1)]
    vm = spec(volumes=[*data, VolumeSpec(uuid="r", role="root", disk=FileDisk(path="/v/r"))])
    assert disk_targets(vm) == {"r": "vda", "d1": "vdb", "d3": "vdc"}
    assert [target_name(i) for i in (0, 25, 26, 27)] == ["vda", "vdz", "vdaa", "vdab"]


def test_uuid_kept_or_derived():
    assert domain_uuid(VM_UUID) == "0a1b2c3d-4e5f-47a8-b9c0-d1e2f3a4b5c6"
    assert domain_uuid("vm-not-a-uuid") == domain_uuid("vm-not-a-uuid") != domain_uuid("other")


def test_fingerprint_changes_with_the_domain_not_with_metadata():
    vm = spec()
    a = render(vm, ctx(vm), DomainMeta(vm.uuid))
    b = render(vm, ctx(vm), DomainMeta(vm.uuid, intent="Running", intent_generation=3))
    c = render(spec(memory_mb=1024), ctx(vm), DomainMeta(vm.uuid))
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.xml != b.xml


def test_metadata_keeps_the_nics_taps_across_agent_restarts():
    """What anti-spoofing keeps filtered until the domain is gone, also for a VM deleted while the agent was down."""
    two = [NicSpec(uuid=u, l3_uuid=u, mac="52:54:00:12:34:5" + u[-1], ip="198.18.0.1" + u[-1], default=u == "aaaa1")
           for u in ("bbbb2", "aaaa1")]
    meta = DomainMeta(VM_UUID, install="done").with_taps(spec(nics=two))
    assert meta.taps == "hstaaaa1,hstbbbb2" and meta.install == "done"
    md = ET.fromstring(render(spec(nics=two), ctx(spec(nics=two)), meta).xml).find("metadata")
    assert DomainMeta.from_xml(ET.tostring(md[0], encoding="unicode")).tap_names == ("hstaaaa1", "hstbbbb2")
    assert DomainMeta(VM_UUID).tap_names == ()


def test_cdrom_media_change_keeps_the_rest_of_the_device():
    live = ("<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='/a.iso'/>"
            "<target dev='hdc' bus='ide'/><readonly/><boot order='2'/><alias name='ua-cdrom'/></disk>")
    ejected = ET.fromstring(with_cdrom_source(live, None))
    assert ejected.find("source") is None and ejected.find("boot").get("order") == "2"
    swapped = ET.fromstring(with_cdrom_source(live, IsoSpec(uuid="b", path="/b.iso")))
    assert swapped.find("source").get("file") == "/b.iso"


def test_consoles_are_unix_sockets_and_the_serial_port_is_still_logged():
    dom = parsed(spec(), modes=Modes(console="spice"))
    serial = dom.find("devices/serial")
    assert serial.get("type") == "unix"
    assert serial.find("source").attrib == {"mode": "bind", "path": f"/run/hoststack/consoles/{VM_UUID}.serial.sock"}
    assert serial.find("log").attrib == {"file": "/var/log/hs/x.log", "append": "on"}
    listen = dom.find("devices/graphics/listen")
    assert listen.attrib == {"type": "socket", "socket": f"/run/hoststack/consoles/{VM_UUID}.spice.sock"}
    assert dom.find("devices/graphics").get("port") is None and "listen" not in dom.find("devices/graphics").attrib
