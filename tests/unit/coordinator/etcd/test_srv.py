"""SRV discovery against a loopback DNS server: both record names, priority then weight, TCP after TC."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.etcd import srv
from coordinator.etcd.endpoints import Endpoint
from testbed.srvzone import SrvZone

RECORDS = {
    "_etcd-client-ssl._tcp.hs.test": [(10, 5, 2001, "b.hs.test."), (0, 1, 2000, "a.hs.test."),
                                      (10, 50, 2002, "c.hs.test.")],
    "_etcd-client._tcp.hs.test": [(5, 0, 2379, "plain.hs.test.")],
    "_etcd-client-ssl-prod._tcp.hs.test": [(0, 0, 3000, "p.hs.test.")],
}


async def test_both_names_ordered_by_priority_then_weight():
    with SrvZone(RECORDS) as zone:
        found = await srv.discover("hs.test", nameservers=[zone.nameserver])
    assert found == [Endpoint("a.hs.test", 2000, True), Endpoint("plain.hs.test", 2379, False),
                     Endpoint("c.hs.test", 2002, True), Endpoint("b.hs.test", 2001, True)]


async def test_a_service_name_picks_its_records():
    with SrvZone(RECORDS) as zone:
        assert await srv.discover("hs.test", "prod", [zone.nameserver]) == [Endpoint("p.hs.test", 3000, True)]


async def test_a_truncated_answer_is_asked_again_over_tcp():
    with SrvZone(RECORDS, truncate=True) as zone:
        found = await srv.discover("hs.test", nameservers=[zone.nameserver])
    assert len(found) == 4


async def test_no_records_or_no_server_fail_discovery():
    with SrvZone(RECORDS) as zone, pytest.raises(srv.DiscoveryFailed, match="no SRV records"):
        await srv.discover("other.test", nameservers=[zone.nameserver])
    with SrvZone({}) as gone:
        dead = gone.nameserver
    with pytest.raises(srv.DiscoveryFailed, match="no nameserver answered"):
        await srv.discover("hs.test", nameservers=[dead])


def test_nameservers_come_from_resolv_conf(tmp_path: Path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("search hs.test\nnameserver 192.0.2.53\nnameserver ::1\n")
    assert srv.system_nameservers(conf) == ["192.0.2.53", "::1"]
    assert srv.system_nameservers(tmp_path / "none") == ["127.0.0.1"]
