"""A running domain's NICs planned against its live XML: matched by alias, taps plugged and unplugged."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from agentkit.model import NicSpec, VmSpec
from kvmagent.domain_xml import NicNet
from kvmagent.vms.nics import plan

LIVE = """<domain><devices>
  <interface type='bridge'><mac address='52:54:00:00:00:01'/><target dev='hstkeep0000'/>
    <alias name='ua-nic-keep0000aaaa'/></interface>
  <interface type='bridge'><mac address='52:54:00:00:00:02'/><target dev='hstgone0000'/>
    <alias name='ua-nic-gone0000aaaa'/></interface>
  <interface type='bridge'><mac address='52:54:00:00:00:09'/><alias name='net5'/></interface>
</devices></domain>"""


def nic(uuid: str, index: int, default: bool = False) -> NicSpec:
    return NicSpec(uuid=uuid, l3_uuid="l3", mac=f"52:54:00:00:00:1{index}", ip=f"198.18.0.{10 + index}",
                   default=default, device_index=index)


def test_a_new_nic_is_attached_as_rendered_and_one_no_longer_wanted_detached():
    spec = VmSpec(uuid="v1", name="v", nics=[nic("keep0000aaaa", 0, True), nic("new00000aaaa", 1)])
    got = plan(spec, LIVE, {"keep0000aaaa": NicNet("hsbr1"), "new00000aaaa": NicNet("hsbr2", 1400)})
    assert got.detach == ["ua-nic-gone0000aaaa"]  # a foreign interface (no user alias of ours) is left alone
    assert [uuid for uuid, _ in got.attach] == ["new00000aaaa"]
    iface = ET.fromstring(got.attach[0][1])
    assert (iface.find("source").get("bridge"), iface.find("target").get("dev"), iface.find("mtu").get("size"),
            iface.find("mac").get("address"), iface.find("alias").get("name")) == (
        "hsbr2", "hstnew00000", "1400", "52:54:00:00:00:11", "ua-nic-new00000aaaa")


def test_nothing_to_plug_when_the_live_domain_matches():
    spec = VmSpec(uuid="v1", name="v", nics=[nic("keep0000aaaa", 0, True), nic("gone0000aaaa", 1)])
    got = plan(spec, LIVE, {})
    assert (got.detach, got.attach) == ([], [])
