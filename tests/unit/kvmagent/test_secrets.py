"""libvirt ceph secrets: the XML, which are removed (defining them: tests/functional)."""

from __future__ import annotations

import base64

from agentkit.model import CephSecretSpec, Held
from kvmagent.secrets import USAGE_PREFIX, SecretsComponent, secret_xml
from kvmagent.view import HostView


def test_ceph_secret_xml_escapes_and_names_our_usage():
    spec = CephSecretSpec(uuid="7a1d2c3e-0000-4000-8000-00000000cef0", user="a<b", fsid="f00d",
                          key=base64.b64encode(b"k" * 16).decode())
    xml = secret_xml(spec)
    assert "<name>hoststack client.a&lt;b f00d</name>" in xml and spec.key not in xml


class Secrets:
    """libvirt's secrets, as the driver lists them (uuid -> usage)."""

    connected = True

    def __init__(self, present: dict[str, str]):
        self.present = present

    async def secrets(self) -> dict[str, str]:
        return dict(self.present)

    async def remove_secret(self, uuid: str) -> None:
        del self.present[uuid]


async def test_our_secrets_nobody_wants_go_but_held_ones_and_others_stay():
    driver = Secrets({"gone": f"{USAGE_PREFIX}x", "held": f"{USAGE_PREFIX}y", "theirs": "ceph client.admin"})
    await SecretsComponent(driver).apply(HostView(held={"cephsecret/held": Held("a newer field value")}))
    assert set(driver.present) == {"held", "theirs"}
