"""Per-VM fairness of the guest-facing services: no guest's traffic changes what other guests get.

Every service that a guest can reach (DHCP, DNS, metadata) takes its limits from here (and its token
buckets per source from `agentkit.buckets`): connection tables with per-source caps and eviction
(`connections`), an accept loop that backs off when the process is out of descriptors (`accept`), a
descriptor budget derived from the process limit (`fdlimit`) and log lines bounded per cause (`ratelog`).
Excess is dropped and counted by the service that owns it; see docs/flatnet.md ("Limits") for every limit
and its counter.
"""
