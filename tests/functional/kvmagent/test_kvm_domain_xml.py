"""Domain XML rendering checked on the XML libvirt gives back (the pure rendering: tests/unit/kvmagent)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt
import pytest

from agentkit.model import BootDevice, FileDisk, IsoSpec, NicSpec, VmSpec, VolumeSpec
from kvmagent.domain_xml import NS, DomainContext, DomainMeta, Modes, NicNet, domain_uuid, render

VM_UUID = "0a1b2c3d4e5f47a8b9c0d1e2f3a4b5c6"


@pytest.fixture
def conn():
    c = libvirt.open("test:///default")
    yield c
    c.close()


def test_libvirt_accepts_it_and_keeps_our_metadata(conn):
    vm = VmSpec(uuid=VM_UUID, name="web-1", cpu=2, memory_mb=512,
                nics=[NicSpec(uuid="nic00001aaaa", l3_uuid="l3a", mac="52:54:00:12:34:56", ip="198.18.0.10",
                              default=True)],
                cdrom=IsoSpec(uuid="iso1", path="/i.iso"), boot_order=[BootDevice.CDROM, BootDevice.HARDDISK],
                volumes=[VolumeSpec(uuid="vol-root", role="root", disk=FileDisk(path="/v/root.qcow2")),
                         VolumeSpec(uuid="vol-data", device_index=1, disk=FileDisk(path="/v/data.qcow2"))])
    ctx = DomainContext(domain_type="qemu", modes=Modes(), nets={"nic00001aaaa": NicNet("hsbr0000aaaa", 1500)},
                        serial_log="/var/log/hs/x.log", boot_order=vm.boot_order)
    meta = DomainMeta(vm.uuid, install="pending")
    rendered = render(vm, ctx, meta)
    dom = conn.defineXML(rendered.xml)
    try:
        assert dom.UUIDString() == domain_uuid(VM_UUID)
        back = DomainMeta.from_xml(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS))
        assert back.vm_uuid == VM_UUID and back.install == "pending" and back.fingerprint == rendered.fingerprint
        x = ET.fromstring(dom.XMLDesc())
        aliases = sorted(a.get("name") for a in x.findall("devices/*/alias"))
        assert aliases == ["ua-cdrom", "ua-nic-nic00001aaaa", "ua-vol-vol-data", "ua-vol-vol-root"]
        assert x.find("devices/disk[@device='cdrom']/boot").get("order") == "1"
        dom.create()
        assert dom.isActive()
        dom.destroy()
    finally:
        dom.undefine()
