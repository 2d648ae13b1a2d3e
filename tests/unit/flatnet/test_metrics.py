"""The flat services' counters as Prometheus text (the services stood in for: no namespaces here)."""

from __future__ import annotations

from flatnet import metrics


class Flatnet:
    def stats(self):
        return {'l3"x': {"netns": "hsf1", "dhcp": {"rx": 5, "rate_limited": 2}, "dns": {}}}

    async def host_stats(self):
        return {"guest_pps_dropped": 9, "bridge_rules_skipped": 1, "lease_changes": 50, "lease_reports": 3,
                "dns_tcp_connections": 4}


class Metadata:
    def stats(self):
        return {"l3a": {"throttled": 11, "connections": 2}}


async def test_every_counter_per_l3_and_service_and_the_host_wide_ones():
    text = "\n".join(await metrics.prometheus(Flatnet(), Metadata()))  # type: ignore[arg-type]
    assert 'hoststack_flatnet_events_total{l3="l3\\"x",service="dhcp",event="rate_limited"} 2' in text
    assert 'hoststack_flatnet_events_total{l3="l3a",service="metadata",event="throttled"} 11' in text
    assert 'event="connections"' not in text and 'hoststack_flatnet_metadata_connections{l3="l3a"} 2' in text
    assert "hoststack_flatnet_guest_pps_dropped_total 9" in text and "hoststack_flatnet_lease_reports_total 3" in text
    assert "# TYPE hoststack_flatnet_dns_tcp_connections gauge\nhoststack_flatnet_dns_tcp_connections 4" in text
