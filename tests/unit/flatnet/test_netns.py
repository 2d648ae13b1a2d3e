"""The namespace kit without a kernel: which names are ours, and how netlink failures come out.

The kit against real namespaces and netlink: tests/functional/flatnet/test_netns.py.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError

from flatnet import netns
from flatnet.eip import netns as eip_netns
from flatnet.eip.plan import pair_key
from flatnet.errors import FlatnetError, NamespaceError
from flatnet.l3ns import L3Namespaces
from flatnet.netns import Netlink


@pytest.fixture
def netns_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(netns, "NETNS_DIR", str(tmp_path))
    return tmp_path


def test_owned_names_are_the_prefix_and_a_key(netns_dir: Path):
    eip = "hse" + pair_key("public-l3", "private-l3")
    flat = L3Namespaces("hsf").layout("0a1b2c3d-4e5f-4000-8000-000000000000", "br", frozenset(), {}).netns
    for name in (eip, flat, "hsedeadbeef0", "hseDEADBEEF", "hsf", "other", "hsfnot-ours"):
        (netns_dir / name).touch()
    assert netns.owned("hse", eip_netns.NAME_KEY) == {eip}
    assert L3Namespaces("hsf").owned() == {flat}


def test_no_namespace_directory_means_no_namespaces(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(netns, "NETNS_DIR", str(tmp_path / "missing"))
    assert netns.owned("hse", eip_netns.NAME_KEY) == set()


class FakeIPRoute:
    """pyroute2's AsyncIPRoute as far as these tests go: links by name, a failure to raise."""

    def __init__(self, links: dict[str, int], error: int | None = None):
        self.links = links
        self.error = error
        self.deleted: list[int] = []

    async def link_lookup(self, ifname: str) -> list[int]:
        return [self.links[ifname]] if ifname in self.links else []

    async def link(self, command: str, **kwargs: Any) -> list[Any]:
        if self.error is not None:
            raise NetlinkError(self.error, "injected")
        if command == "del":
            self.deleted.append(kwargs["index"])
        return []


def handle(links: dict[str, int], error: int | None = None) -> tuple[Netlink, FakeIPRoute]:
    nl = Netlink("ns1")
    nl._ipr = fake = FakeIPRoute(links, error)
    return nl, fake


async def test_netlink_errors_become_namespace_errors_naming_the_namespace():
    nl, _ = handle({"eth0": 4}, error=errno.EPERM)
    with pytest.raises(NamespaceError, match="namespace ns1: ") as caught:
        await nl.set_link(4, state="up")
    assert isinstance(caught.value, FlatnetError) and isinstance(caught.value.__cause__, NetlinkError)
    with pytest.raises(NamespaceError, match="namespace ns1: veth9 does not exist"):
        await nl.require("veth9")


async def test_deleting_a_link_tolerates_only_its_being_gone():
    nl, fake = handle({"eth0": 4})
    await nl.delete_link("eth0")
    await nl.delete_link("missing")
    assert fake.deleted == [4]
    gone, _ = handle({"eth0": 4}, error=errno.ENODEV)
    await gone.delete_link("eth0")
    busy, _ = handle({"eth0": 4}, error=errno.EBUSY)
    with pytest.raises(NamespaceError):
        await busy.delete_link("eth0")
