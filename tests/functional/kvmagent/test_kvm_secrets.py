"""libvirt ceph secrets from the host stream, on the real private libvirtd."""

from __future__ import annotations

import base64

import pytest

from agentkit.model import CephSecretSpec
from kvmagent.libvirt_driver import LibvirtDriver
from kvmagent.secrets import SecretsComponent
from kvmagent.view import HostView

pytestmark = pytest.mark.real
UUID = "7a1d2c3e-0000-4000-8000-00000000cef0"
FOREIGN = "7a1d2c3e-0000-4000-8000-0000000f0e19"


def view(*specs: CephSecretSpec) -> HostView:
    return HostView(cephsecrets={s.fsid: s for s in specs})


async def test_secrets_follow_the_stream_and_foreign_ones_stay(lab):
    virsh = lab.host.virsh
    foreign = lab.run.path("foreign.xml")
    foreign.write_text(f"<secret ephemeral='no' private='yes'><uuid>{FOREIGN}</uuid>"
                       "<usage type='ceph'><name>someone else</name></usage></secret>")
    virsh("secret-define", str(foreign))
    driver = LibvirtDriver(lab.host.uri)
    await driver.connect(timeout=10)
    try:
        comp = SecretsComponent(driver)
        key1 = base64.b64encode(b"k" * 16).decode()
        spec = CephSecretSpec(uuid=UUID, user="hoststack-vms", key=key1, fsid="f00d")
        await comp.apply(view(spec))
        await comp.apply(view(spec))                      # idempotent
        assert UUID in virsh("secret-list")
        key2 = base64.b64encode(b"n" * 16).decode()
        await comp.apply(view(spec.model_copy(update={"key": key2})))
        assert "hoststack client.hoststack-vms f00d" in virsh("secret-dumpxml", UUID)
        await comp.apply(view())
        listed = virsh("secret-list")
        assert UUID not in listed and FOREIGN in listed
    finally:
        virsh("secret-undefine", FOREIGN, rcs=(0, 1))
        await driver.close()
