"""MAC picking against a stand-in store: fixed ones checked, random ones drawn again while taken."""

from __future__ import annotations

import pytest

from agentkit.errors import Invalid
from coordinator.domain import macs
from coordinator.domain.errors import MacInUse
from coordinator.etcd import keys


class Taken:
    """A store holding the MAC claims of `l2`."""

    def __init__(self, l2: str, *taken: str):
        self.keys = {keys.mac(l2, m) for m in taken}

    async def get(self, key: str) -> object | None:
        return {"nic": "other"} if key in self.keys else None


async def test_a_random_mac_is_drawn_again_while_taken(monkeypatch):
    draws = iter([b"\x00\x00\x01", b"\x00\x00\x01", b"\x00\x00\x02", b"\x00\x00\x03"])
    monkeypatch.setattr(macs.random, "randbytes", lambda n: next(draws))
    store = Taken("l2a", "fa:16:3e:00:00:01")
    assert await macs.pick(store, "l2a", None, fresh=True, avoid={"fa:16:3e:00:00:02"}) == "fa:16:3e:00:00:03"



async def test_an_l2_whose_random_macs_are_all_taken_is_a_conflict(monkeypatch):
    monkeypatch.setattr(macs.random, "randbytes", lambda n: b"\x00\x00\x01")
    with pytest.raises(MacInUse) as e:
        await macs.pick(Taken("l2a", "fa:16:3e:00:00:01"), "l2a", None, fresh=True)
    assert (e.value.status, e.value.field) == (409, "fixed_macs")
    assert str(e.value) == f"no free random MAC found on L2 l2a in {macs.MAX_TRIES} draws"


async def test_a_fixed_mac_in_use_or_multicast_is_refused_naming_the_field():
    store = Taken("l2a", "52:54:00:00:00:01")
    assert await macs.pick(store, "l2b", "52:54:00:00:00:01", fresh=True) == "52:54:00:00:00:01"  # on another L2
    for l2, mac, avoid in (("l2a", "52:54:00:00:00:01", set()), ("l2b", "52:54:00:00:00:09", {"52:54:00:00:00:09"})):
        with pytest.raises(MacInUse) as e:
            await macs.pick(store, l2, mac, fresh=True, avoid=avoid)
        assert (e.value.status, e.value.code, e.value.field) == (409, "mac_in_use", "fixed_macs")
    with pytest.raises(Invalid) as bad:
        await macs.pick(store, "l2a", "01:00:5e:00:00:01", fresh=True)
    assert bad.value.field == "fixed_macs"
