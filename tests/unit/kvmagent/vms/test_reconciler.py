"""The facade without libvirtd: desired state is kept and applied once libvirt answers."""

from __future__ import annotations

import pytest

from agentkit.model import FileDisk, VmSpec, VolumeSpec
from kvmagent.errors import DriverError
from kvmagent.libvirt_driver import LibvirtDriver
from kvmagent.vms import VmReconciler, VmSettings


class NoBridges:
    failed: dict = {}


async def test_apply_while_libvirtd_is_away_is_deferred_to_the_reconnect_resync():
    rec = VmReconciler(LibvirtDriver("test:///default"), NoBridges(),
                       VmSettings(domain_type="qemu", volume_dir="/vols"), lambda kind, ident, body: None)
    spec = VmSpec(uuid="aaaaaaaa-0000-4000-8000-000000000001", name="v",
                  volumes=[VolumeSpec(uuid="r", role="root", disk=FileDisk(path="v/r.qcow2"))])
    await rec.apply({spec.uuid: spec}, {}, {}, {})  # not connected: logged, not raised
    assert rec.ledger.desired[spec.uuid].volumes[0].disk.path == "/vols/v/r.qcow2"
    assert rec.ledger.ours(spec.uuid) and not rec.ledger.ours("other")
    with pytest.raises(DriverError, match="not connected"):
        await rec.resync()  # what the reconnect hook runs: it fails loudly while libvirtd is away
    await rec.close()
