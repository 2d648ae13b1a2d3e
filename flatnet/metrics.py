"""The flat services' counters as Prometheus text, for the agent's `/metrics` (docs/flatnet.md, "Limits").

Per L3 and service, every counter the DHCP and DNS responders and the metadata server keep
(`hoststack_flatnet_events_total{l3, service, event}`: requests answered, and what was dropped, delayed,
evicted or refused); host-wide, the guest frames the kernel dropped for exceeding `guest_pps`, the
items left out of the bridge rules and the lease changes noted against those reported.
"""

from __future__ import annotations

from collections.abc import Mapping

from flatnet.metadata.server import MetadataService
from flatnet.service import FlatnetService

_GAUGES = frozenset({"connections"})


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _events(l3: str, service: str, counters: Mapping[str, int]) -> list[str]:
    return [f'hoststack_flatnet_events_total{{l3="{_label(l3)}",service="{service}",event="{_label(k)}"}} {v}'
            for k, v in sorted(counters.items()) if k not in _GAUGES]


async def prometheus(flatnet: FlatnetService, metadata: MetadataService | None) -> list[str]:
    lines = ["# TYPE hoststack_flatnet_events_total counter"]
    for l3, stats in sorted(flatnet.stats().items()):
        lines += _events(l3, "dhcp", stats["dhcp"]) + _events(l3, "dns", stats["dns"])
    served = metadata.stats() if metadata is not None else {}
    for l3, counters in sorted(served.items()):
        lines += _events(l3, "metadata", counters)
    lines.append("# TYPE hoststack_flatnet_metadata_connections gauge")
    lines += [f'hoststack_flatnet_metadata_connections{{l3="{_label(l3)}"}} {c.get("connections", 0)}'
              for l3, c in sorted(served.items())]
    host = await flatnet.host_stats()
    for name, kind in (("guest_pps_dropped", "counter"), ("bridge_rules_skipped", "gauge"),
                       ("lease_changes", "counter"), ("lease_reports", "counter"), ("dns_tcp_connections", "gauge")):
        metric = f"hoststack_flatnet_{name}" + ("_total" if kind == "counter" else "")
        lines += [f"# TYPE {metric} {kind}", f"{metric} {host[name]}"]
    return lines
