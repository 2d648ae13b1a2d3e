"""The namespace kit against the kernel: a namespace, a veth into a bridge, and everything `sync_*` keeps.

Every check reads the end state back with `ip`/`bridge` (JSON), never through the kit itself.
"""

from __future__ import annotations

import itertools
import json

import pytest

from agentkit.addr import METADATA_ADDRESS
from flatnet.errors import NamespaceError
from flatnet.netns import Namespace, Netlink, Veth, ensure_veth
from testbed.netns import Netns

pytestmark = pytest.mark.real
VM_MAC, OTHER_MAC = "52:54:00:4e:00:01", "52:54:00:4e:00:02"
_SEQ = itertools.count()


def link(ns: Netns, dev: str) -> dict:
    return json.loads(ns.ip("-j", "-d", "link", "show", dev).stdout)[0]


def addresses(ns: Netns, dev: str) -> set[tuple[str, int]]:
    return {(a["local"], a["prefixlen"]) for a in json.loads(ns.ip("-j", "-4", "addr", "show", dev).stdout)[0]
            ["addr_info"]}


def neighbours(ns: Netns, dev: str, *nud: str) -> dict[str, str]:
    return {n["dst"]: n["lladdr"] for n in json.loads(ns.ip("-j", "neigh", "show", "dev", dev, *nud).stdout)}


@pytest.fixture
async def kit(run):
    """A host namespace with a bridge, and the name of a namespace to make (new names for each test)."""
    n = next(_SEQ)
    host = run.netns(f"kit{n}-host")
    host.ip("link", "add", "br0", "type", "bridge")
    host.ip("link", "set", "br0", "up")
    hostnl, ns = Netlink(host.name), Namespace(f"{run.prefix}-kit{n}-ns")
    try:
        yield host, hostnl, ns
    finally:
        await ns.destroy(hostnl, "kh0")
        hostnl.close()


async def test_a_namespace_is_made_once_plugged_into_a_bridge_and_removed_whole(run, kit):
    host, hostnl, ns = kit
    assert not ns.exists()
    assert await ns.create() is True and ns.exists() and await ns.create() is False
    host.ip("link", "add", "kh0", "type", "veth", "peer", "name", "kx0")  # a crash's leftover: no end inside
    veth = await ensure_veth(hostnl, ns, "kh0", "ki0", mtu=1400)
    assert veth.made and link(host, "kh0")["linkinfo"]["info_kind"] == "veth" and link(host, "kh0")["mtu"] == 1400
    assert await ensure_veth(hostnl, ns, "kh0", "ki0") == Veth(veth.host_index, veth.inner_index, made=False)
    await hostnl.set_link(veth.host_index, master=await hostnl.require("br0"), state="up")
    await ns.set_link(veth.inner_index, state="up")
    inner = Netns(run, ns.name)
    assert link(host, "kh0")["master"] == "br0" and link(inner, "ki0")["operstate"] == "UP"
    assert await ns.mac(veth.inner_index) == link(inner, "ki0")["address"]
    await ns.sysctl("net.ipv4.ip_forward=1")
    assert inner.sh("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"

    await ns.destroy(hostnl, "kh0")
    assert not ns.exists() and "kh0" not in host.ip("-br", "link").stdout
    await ns.destroy(hostnl, "kh0")  # gone already: nothing to do


async def test_sync_writes_only_the_differences(run, kit):
    host, hostnl, ns = kit
    await ns.create()
    veth = await ensure_veth(hostnl, ns, "kh0", "ki0")
    idx, inner = veth.inner_index, Netns(run, ns.name)
    await ns.set_link(idx, state="up")
    want = {("198.18.77.2", 24), (METADATA_ADDRESS, 32)}
    assert await ns.sync_addresses(idx, want) == (want, set())
    assert await ns.sync_addresses(idx, want) == (set(), set()) and addresses(inner, "ki0") == want
    assert await ns.sync_addresses(idx, {("198.18.77.3", 24)}) == ({("198.18.77.3", 24)}, want)

    inner.ip("neigh", "replace", "198.18.77.99", "lladdr", OTHER_MAC, "dev", "ki0", "nud", "permanent")
    inner.ip("neigh", "replace", "198.18.77.98", "lladdr", OTHER_MAC, "dev", "ki0", "nud", "stale")  # learned
    changed = await ns.sync_neighbours(idx, {"198.18.77.10": VM_MAC})
    assert changed == {"198.18.77.99"}
    assert neighbours(inner, "ki0", "nud", "permanent") == {"198.18.77.10": VM_MAC}
    assert "198.18.77.98" in neighbours(inner, "ki0")  # the kernel's own entries are left alone
    assert await ns.sync_neighbours(idx, {"198.18.77.10": VM_MAC}) == set()
    await ns.add_neighbours(idx, {"198.18.77.11": OTHER_MAC})
    assert neighbours(inner, "ki0", "nud", "permanent") == {"198.18.77.10": VM_MAC, "198.18.77.11": OTHER_MAC}

    routes = {("198.18.77.0", 24, idx, None), ("0.0.0.0", 0, idx, "198.18.77.1")}
    await ns.sync_routes(routes)
    await ns.sync_routes(routes)
    listed = {(r["dst"], r.get("gateway")) for r in json.loads(inner.ip("-j", "-4", "route").stdout)}
    assert listed == {("198.18.77.0/24", None), ("default", "198.18.77.1")}

    port, bridge = await hostnl.require("kh0"), await hostnl.require("br0")
    await hostnl.set_link(port, master=bridge, state="up")
    await hostnl.pin_fdb(port, VM_MAC, bridge)
    fdb = json.loads(host.sh("bridge", "-j", "fdb", "show", "dev", "kh0").stdout)
    assert any(e["mac"] == VM_MAC and "static" in e.get("state", "") for e in fdb), fdb


async def test_failures_are_namespace_errors(run, kit):
    _, hostnl, ns = kit
    await ns.create()
    with pytest.raises(NamespaceError, match=f"namespace {ns.name}: nothing9 does not exist"):
        await ns.require("nothing9")
    with pytest.raises(NamespaceError, match=f"namespace {ns.name}: "):
        await ns.set_link(99999, state="up")
    with pytest.raises(NamespaceError):
        await Namespace(f"{run.prefix}-kit-absent").index("lo")  # no such namespace
