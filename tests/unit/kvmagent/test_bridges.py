"""The bridges component: every L2 is tried, one failing L2 fails alone (netlink itself: tests/functional)."""

from __future__ import annotations

import pytest

from agentkit.model import Held, L2Spec
from kvmagent.bridges import BridgesComponent
from kvmagent.errors import BridgeError, KvmAgentError
from kvmagent.view import HostView

GOOD = L2Spec(uuid="0123456789abcdef", name="flat", physical_interface="eth0")
BAD = L2Spec(uuid="feedfeedfeed", name="x", physical_interface="eth9")


class FakeBridges:
    def __init__(self) -> None:
        self.built: list[str] = []
        self.kept: list[list[str]] = []
        self.closed = False

    async def ensure_all(self, l2s) -> dict[str, BridgeError]:
        out = {}
        for l2 in l2s:
            if l2.physical_interface == "eth9":
                out[l2.uuid] = BridgeError(f"l2 {l2.uuid}: physical interface eth9 not found")
            else:
                self.built.append(l2.uuid)
        return out

    async def prune(self, wanted) -> None:
        self.kept.append(sorted(wanted))

    async def close(self) -> None:
        self.closed = True


async def test_a_failing_l2_fails_the_pass_but_not_the_others():
    fake = FakeBridges()
    comp = BridgesComponent(fake)
    with pytest.raises(KvmAgentError, match="eth9 not found"):
        await comp.apply(HostView(l2s={GOOD.uuid: GOOD, BAD.uuid: BAD}))
    assert fake.built == [GOOD.uuid] and list(comp.failed) == [BAD.uuid]
    assert fake.kept == [sorted([GOOD.uuid, BAD.uuid])]  # pruned all the same
    await comp.apply(HostView(l2s={GOOD.uuid: GOOD}))
    assert comp.failed == {}
    await comp.close()
    assert fake.closed


async def test_the_bridge_of_a_held_l2_is_not_pruned():
    fake = FakeBridges()
    await BridgesComponent(fake).apply(HostView(l2s={GOOD.uuid: GOOD}, held={f"l2/{BAD.uuid}": Held("new kind")}))
    assert fake.built == [GOOD.uuid] and fake.kept == [sorted([GOOD.uuid, BAD.uuid])]
