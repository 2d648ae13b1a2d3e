"""Per-VM fairness of the guest-facing services: no guest's traffic changes what other guests get.

Every service that a guest can reach (DHCP, DNS, metadata) takes its limits from here and from
`agentkit.fairness` (connection tables, the accept loop, the descriptor budget, bounded log lines): the line
that connections over their source's request rate wait in (`throttle`), token buckets per source from
`agentkit.buckets`. Excess is dropped and counted by the
service that owns it; see docs/flatnet.md ("Limits") for every limit and its counter.
"""
