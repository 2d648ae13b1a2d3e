"""The flat services' counters as Prometheus text, for the agent's `/metrics` (docs/flatnet.md, "Limits").

The frames of VMs the taps' anti-spoofing dropped, by reason (`hoststack_flatnet_antispoof_dropped_total`:
on every host, network services or not). With the network services, per L3 and service, every counter the
DHCP and DNS responders and the metadata server keep (`hoststack_flatnet_events_total{l3, service, event}`:
requests answered, and what was dropped, delayed, evicted or refused); host-wide, the guest frames the
kernel dropped for exceeding `guest_pps`, the items left out of the bridge rules and the lease changes
noted against those reported.
"""

from __future__ import annotations

from collections.abc import Mapping

from agentkit.metrics import LabelValues, family
from flatnet.antispoof import Antispoof
from flatnet.metadata.server import MetadataService
from flatnet.service import FlatnetService

_GAUGES = frozenset({"connections"})
# (metric, its count in host_stats(), kind, help): each name spelled out whole, as grep and tests/unit/test_docs.py
# look for it
_HOST = (("hoststack_flatnet_guest_pps_dropped_total", "guest_pps_dropped", "counter",
          "guest frames over guest_pps the kernel dropped"),
         ("hoststack_flatnet_bridge_rules_skipped", "bridge_rules_skipped", "gauge",
          "ports and NICs left out of the bridge rules' last write"),
         ("hoststack_flatnet_lease_changes_total", "lease_changes", "counter", "DHCP lease changes noted"),
         ("hoststack_flatnet_lease_reports_total", "lease_reports", "counter",
          "DHCP lease changes reported to the coordinator"),
         ("hoststack_flatnet_dns_tcp_connections", "dns_tcp_connections", "gauge",
          "DNS TCP connections of guests held"))


def _events(l3: str, service: str, counters: Mapping[str, int]) -> list[tuple[LabelValues, float]]:
    return [((l3, service, k), v) for k, v in sorted(counters.items()) if k not in _GAUGES]


async def prometheus(antispoof: Antispoof, flatnet: FlatnetService | None = None,
                     metadata: MetadataService | None = None) -> list[str]:
    dropped = await antispoof.dropped()
    lines = family("hoststack_flatnet_antispoof_dropped_total", "VM frames the taps' anti-spoofing dropped",
                   "counter", ("reason",), [((reason,), n) for reason, n in sorted(dropped.items())])
    if flatnet is None:
        return lines
    events = []
    for l3, stats in sorted(flatnet.stats().items()):
        events += _events(l3, "dhcp", stats["dhcp"]) + _events(l3, "dns", stats["dns"])
    served = metadata.stats() if metadata is not None else {}
    for l3, counters in sorted(served.items()):
        events += _events(l3, "metadata", counters)
    lines += [*family("hoststack_flatnet_events_total", "what the flat services answered, dropped, delayed, evicted "
                      "or refused", "counter", ("l3", "service", "event"), events),
              *family("hoststack_flatnet_metadata_connections", "metadata connections held", "gauge", ("l3",),
                      [((l3,), c.get("connections", 0)) for l3, c in sorted(served.items())])]
    host = await flatnet.host_stats()
    for metric, name, kind, help in _HOST:
        lines += family(metric, help, kind, (), [((), host[name])])
    return lines
