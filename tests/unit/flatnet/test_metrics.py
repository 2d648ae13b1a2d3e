"""The flat services' counters as Prometheus text (the services stood in for: no namespaces here)."""

from __future__ import annotations

from flatnet import metrics
from testbed import promtext

ODD_L3 = 'l3"x\\y\nz'  # an L3 uuid is the coordinator's, but a label value must survive any text


class Flatnet:
    def stats(self):
        return {ODD_L3: {"netns": "hsf1", "dhcp": {"rx": 5, "rate_limited": 2}, "dns": {}}}

    async def host_stats(self):
        return {"guest_pps_dropped": 9, "bridge_rules_skipped": 1, "lease_changes": 50, "lease_reports": 3,
                "dns_tcp_connections": 4}


class Metadata:
    def stats(self):
        return {"l3a": {"throttled": 11, "connections": 2}}


class Antispoof:
    async def dropped(self):
        return {"spoofed": 6, "protocol": 40}


async def test_every_counter_per_l3_and_service_and_the_host_wide_ones():
    text = "\n".join(await metrics.prometheus(Antispoof(), Flatnet(), Metadata())) + "\n"  # type: ignore[arg-type]
    events = "hoststack_flatnet_events_total"
    assert promtext.value(text, events, l3=ODD_L3, service="dhcp", event="rate_limited") == 2
    assert promtext.value(text, events, l3="l3a", service="metadata", event="throttled") == 11
    assert promtext.value(text, "hoststack_flatnet_metadata_connections", l3="l3a") == 2
    assert not [k for k in promtext.series(text) if ("event", "connections") in k[1]]  # a gauge, not an event
    assert promtext.value(text, "hoststack_flatnet_guest_pps_dropped_total") == 9
    assert promtext.value(text, "hoststack_flatnet_lease_reports_total") == 3
    assert promtext.families(text)["hoststack_flatnet_dns_tcp_connections"].type == "gauge"


async def test_the_taps_anti_spoofing_drops_are_counted_with_or_without_network_services():
    text = "\n".join(await metrics.prometheus(Antispoof())) + "\n"  # type: ignore[arg-type]
    assert promtext.value(text, "hoststack_flatnet_antispoof_dropped_total", reason="spoofed") == 6
    assert promtext.value(text, "hoststack_flatnet_antispoof_dropped_total", reason="protocol") == 40
    assert set(promtext.families(text)) == {"hoststack_flatnet_antispoof_dropped"}
