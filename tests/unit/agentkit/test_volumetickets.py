"""Volume tickets: issued by the coordinator with the source host's key, checked offline by the source."""

from __future__ import annotations

import hashlib

import pytest

from agentkit.volumetickets import LIFETIME, VolumeTicketRefused, check, issue

KEY = hashlib.sha256(b"source-host-token").digest()


def test_a_ticket_opens_its_volume_until_it_expires_give_or_take_the_clocks_skew():
    ticket = issue(KEY, "vol1", 1000)
    check(KEY, "vol1", ticket, 999)
    check(KEY, "vol1", ticket, 1300)
    with pytest.raises(VolumeTicketRefused, match="expired 301 s ago"):
        check(KEY, "vol1", ticket, 1301)
    check(KEY, "vol1", ticket, 1000 - LIFETIME - 300)
    with pytest.raises(VolumeTicketRefused, match="clock is behind"):
        check(KEY, "vol1", ticket, 99)


@pytest.mark.parametrize(("key", "volume", "ticket", "why"), [
    (KEY, "vol2", issue(KEY, "vol1", 1000), "not issued for volume vol2"),
    (hashlib.sha256(b"another host").digest(), "vol1", issue(KEY, "vol1", 1000), "not issued"),
    (KEY, "vol1", "2000." + issue(KEY, "vol1", 1000).split(".")[1], "not issued"),  # a later expiry: a forgery
    (KEY, "vol1", "soon.abc", "malformed"),
    (KEY, "vol1", "", "malformed"),
])
def test_anything_else_is_refused(key, volume, ticket, why):
    with pytest.raises(VolumeTicketRefused, match=why) as e:
        check(key, volume, ticket, 0)
    assert e.value.status == 403
