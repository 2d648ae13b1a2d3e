"""The libvirt driver's pure parts: consoles, domain type, state mapping (no connection)."""

from __future__ import annotations

import libvirt

from agentkit.model import VmState
from kvmagent.libvirt_driver import _state, _stopped_here, console_from_xml, detect_domain_type, kvm_usable


def test_consoles_from_live_xml():
    """Only consoles on unix sockets count: the agent's tunnel reaches nothing else."""
    xml = ("<domain><devices><serial type='unix'><source mode='bind' path='/c/v.serial.sock'/></serial>"
           "<console type='unix'><source mode='bind' path='/c/v.serial.sock'/></console>"
           "<graphics type='spice'><listen type='socket' socket='/c/v.spice.sock'/></graphics></devices></domain>")
    assert console_from_xml(xml) == {"protocol": "spice", "kinds": ["spice", "serial"]}
    tcp = "<domain><devices><graphics type='vnc' port='5900' listen='198.18.0.9'/></devices></domain>"
    assert console_from_xml(tcp) is None


def test_domain_type_detection(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags : fpu vme hypervisor\n")
    assert not kvm_usable(dev="/dev/null", cpuinfo=str(cpuinfo))  # no VT-x/AMD-V: TCG
    assert not kvm_usable(dev=str(tmp_path / "missing"), cpuinfo=str(cpuinfo))
    assert detect_domain_type("kvm") == "kvm" and detect_domain_type("qemu") == "qemu"
    assert detect_domain_type("auto") in ("kvm", "qemu")


def test_states_in_the_vms_vocabulary():
    assert _state(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED) is VmState.CRASHED
    assert _state(libvirt.VIR_DOMAIN_SHUTOFF, 0) is VmState.STOPPED
    assert _state(libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_STARTING_UP) is VmState.RUNNING
    # the target of a live migration starts so too, and runs only once its memory arrived
    assert _state(libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_STARTING_UP, incoming=True) is VmState.PAUSED
    assert _state(libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION, incoming=True) is VmState.PAUSED
    assert _state(libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_MIGRATED, incoming=True) is VmState.RUNNING
    assert _state(libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER) is VmState.PAUSED
    assert _state(libvirt.VIR_DOMAIN_PMSUSPENDED, 0) is VmState.PAUSED
    assert _state(99, 0) is VmState.UNKNOWN


def test_a_domain_shut_off_by_its_live_migration_did_not_stop_here():
    """A source's domain shut off as its send completed runs on the target: the move must not end here on it."""
    assert not _stopped_here(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED)
    for reason in (libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED,
                   libvirt.VIR_DOMAIN_SHUTOFF_CRASHED, libvirt.VIR_DOMAIN_SHUTOFF_FAILED):
        assert _stopped_here(libvirt.VIR_DOMAIN_SHUTOFF, reason)
    assert not _stopped_here(libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION)  # paused for its last copy
