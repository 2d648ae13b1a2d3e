"""L2 bridges in a real network namespace (pyroute2 netlink, checked with `ip -d link`)."""

from __future__ import annotations

import json

import pytest

from agentkit.model import L2Spec
from kvmagent.bridges import Bridges
from testbed.netns import Run

pytestmark = pytest.mark.real


@pytest.fixture
def host():
    run = Run()
    try:
        ns = run.netns("br")
        peer = run.netns("sw")
        run.veth(ns, "eth0", peer, "p0")
        ns.ip("link", "set", "eth0", "down")
        yield ns
    finally:
        run.close()


def links(ns) -> dict[str, dict]:
    return {ln["ifname"]: ln for ln in json.loads(ns.ip("-d", "-j", "link", "show").stdout)}


async def test_bridge_with_physical_uplink_is_idempotent_and_repaired(host):
    l2 = L2Spec(uuid="0123456789abcdef", name="flat", physical_interface="eth0")
    br = Bridges(netns=host.name)
    try:
        assert await br.ensure_all([l2]) == {}
        first = links(host)
        assert first[l2.bridge]["linkinfo"]["info_kind"] == "bridge"
        assert first[l2.bridge]["ifalias"] == f"hoststack:l2:{l2.uuid}"
        assert first["eth0"]["master"] == l2.bridge and "UP" in first["eth0"]["flags"]
        await br.ensure_all([l2])
        assert links(host)[l2.bridge]["ifindex"] == first[l2.bridge]["ifindex"]  # not re-created
        host.ip("link", "set", "eth0", "nomaster")  # someone broke it
        await br.ensure_all([l2])
        assert links(host)["eth0"]["master"] == l2.bridge
        assert await br.ports(l2.bridge) == ["eth0"]
    finally:
        await br.close()


async def test_prune_removes_only_our_unwanted_bridges(host):
    host.ip("link", "add", "hsbrforeign", "type", "bridge")
    l2 = L2Spec(uuid="0123456789abcdef", name="flat", physical_interface="eth0")
    br = Bridges(netns=host.name)
    try:
        await br.ensure_all([l2])
        await br.prune([l2.uuid])
        assert l2.bridge in links(host)
        await br.prune([])
        now = links(host)
        assert l2.bridge not in now and "hsbrforeign" in now
        assert "master" not in now["eth0"]  # released with its bridge
    finally:
        await br.close()


async def test_missing_uplink_is_an_error(host):
    br = Bridges(netns=host.name)
    try:
        errors = await br.ensure_all([L2Spec(uuid="feedfeedfeed", name="x", physical_interface="eth9")])
        assert "eth9 not found" in str(errors["feedfeedfeed"])
    finally:
        await br.close()


async def test_vlan_uplink(host):
    l2 = L2Spec(uuid="0123456789abcdef", name="v", physical_interface="eth0", vlan=42)
    br = Bridges(netns=host.name)
    try:
        errors = await br.ensure_all([l2])
        if errors and "8021q" in str(errors[l2.uuid]):
            pytest.skip("this kernel cannot create VLAN devices (no 8021q module)")
        assert not errors
        now = links(host)
        assert now[l2.uplink]["linkinfo"]["info_data"]["id"] == 42
        assert now[l2.uplink]["master"] == l2.bridge
        await br.prune([])
        assert l2.uplink not in links(host)
    finally:
        await br.close()
