"""libvirt ceph secrets: the XML (defining them: tests/functional)."""

from __future__ import annotations

import base64

from agentkit.model import CephSecretSpec
from kvmagent.secrets import secret_xml


def test_ceph_secret_xml_escapes_and_names_our_usage():
    spec = CephSecretSpec(uuid="7a1d2c3e-0000-4000-8000-00000000cef0", user="a<b", fsid="f00d",
                          key=base64.b64encode(b"k" * 16).decode())
    xml = secret_xml(spec)
    assert "<name>hoststack client.a&lt;b f00d</name>" in xml and spec.key not in xml
