"""nftables text of the EIP dataplane: the NAT table inside each EIP namespace and the host's bridge table.

Rendering only (Felix keeps rule generation apart from programming it): every function returns the
body of one table as lines, sorted so that the same desired state always renders the same text.
Per-EIP data lives in maps and sets keyed by address, so 1,000 EIPs add map elements, not rules.
See docs/eip.md for the packet path these rules implement.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from flatnet.eip.plan import NS_PRIVATE_DEV, PairPlan

# Destinations an EIP VM reaches without the EIP namespace: this network itself, link-local (the
# metadata address is steered by the flat DHCP/metadata service), multicast, reserved and broadcast.
NEVER_STEERED = "{ 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/3 }"


def _elements(items: Iterable[str]) -> list[str]:
    values = list(dict.fromkeys(items))  # callers pass plan order: sorted by namespace, then by VIP
    if not values:
        return []
    body = [f"\t\t\t{v}," for v in values]
    body[-1] = body[-1].rstrip(",")
    return ["\t\telements = {", *body, "\t\t}"]


def _collection(kind: str, name: str, typedef: str, items: Iterable[str]) -> list[str]:
    return [f"\t{kind} {name} {{", f"\t\t{typedef}", *_elements(items), "\t}"]


def _chain(name: str, hook: str | None, rules: Iterable[str]) -> list[str]:
    head = [f"\t\t{hook}"] if hook else []
    return [f"\tchain {name} {{", *head, *(f"\t\t{r}" for r in rules), "\t}"]


def namespace_body(plan: PairPlan) -> list[str]:
    """DNAT VIP -> private IP, SNAT private IP -> VIP, and nothing else forwarded. The DNAT applies only to a
    VIP held on `pub` (`fib daddr type local`), so the address is the one switch: a staged VIP (in the maps,
    not on `pub`) is neither answered nor translated here, and a VM of this host reaches it where it is
    answered, out of `pub`. NAT translates only what conntrack tracks, so from a private address only a new
    connection is let out (and translated): a packet conntrack cannot place (the reply of a VM that moved
    live to a ping its old host let in) is dropped, not sent out from that private address."""
    inbound = (f"{b.vip} : {b.private_ip}" for b in plan.bindings)
    outbound = (f"{b.private_ip} : {b.vip}" for b in plan.bindings)
    return [
        *_collection("map", "vip_to_ip", "type ipv4_addr : ipv4_addr", inbound),
        *_collection("map", "ip_to_vip", "type ipv4_addr : ipv4_addr", outbound),
        *_chain("prerouting", "type nat hook prerouting priority dstnat; policy accept;",
                ["fib daddr type local dnat to ip daddr map @vip_to_ip"]),
        *_chain("postrouting", "type nat hook postrouting priority srcnat; policy accept;",
                ["snat to ip saddr map @ip_to_vip"]),
        *_chain("forward", "type filter hook forward priority filter; policy drop;", [
            "ct state established,related accept",
            "ct status dnat accept",
            f'iifname "{NS_PRIVATE_DEV}" ip saddr @ip_to_vip ct state new accept',
        ]),
    ]


def l3_tag(private_l3: str) -> str:
    """A stable nft-safe name fragment for a private L3."""
    return hashlib.sha1(private_l3.encode()).hexdigest()[:8]


def _q(name: str) -> str:
    return f'"{name}"'


def host_body(plans: Iterable[PairPlan], private_macs: Mapping[str, str]) -> list[str] | None:
    """The host's bridge table, or None when no EIP is left on this host (the table is then deleted).

    `private_macs` maps each EIP namespace to the MAC of its private-side device.
    """
    plans = [p for p in plans if p.bindings and p.netns in private_macs]
    if not plans:
        return None
    steer: dict[str, list[str]] = {}
    nets: dict[str, str] = {}
    to_ns, gw_arp, from_ns = [], [], []
    for p in plans:
        tag, port, ns_mac = l3_tag(p.private_l3), _q(p.host_private_dev), private_macs[p.netns]
        nets[tag] = str(p.private_net)
        for b in p.bindings:
            vm = f"{_q(b.tap)} . {b.mac} . {b.private_ip}"
            steer.setdefault(tag, []).append(f"{vm} : {ns_mac}")
            to_ns.append(f"{port} . {vm}")
            from_ns.append(f"{port} . {_q(b.tap)} . {b.mac}")
            if p.private_gateway is not None:
                gw_arp.append(f"{port} . {_q(b.tap)} . {b.mac} . {p.private_gateway}")
    ports = "{ " + ", ".join(sorted({_q(p.host_private_dev) for p in plans})) + " }"
    body: list[str] = []
    for tag in sorted(steer):
        body += _collection("map", f"steer_{tag}", "typeof iifname . ether saddr . ip saddr : ether daddr",
                            steer[tag])
    body += _collection("set", "to_ns", "typeof oifname . iifname . ether saddr . ip saddr", to_ns)
    body += _collection("set", "gw_arp", "typeof oifname . iifname . ether saddr . arp daddr ip", gw_arp)
    body += _collection("set", "from_ns", "typeof iifname . oifname . ether daddr", from_ns)
    steering = [f"ip daddr != {nets[t]} ether daddr set iifname . ether saddr . ip saddr map @steer_{t}"
                for t in sorted(steer)]
    body += _chain("prerouting", "type filter hook prerouting priority dstnat; policy accept;", [
        "ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 return",
        f"ip daddr {NEVER_STEERED} return",
        *steering,
    ])
    body += _chain("forward", "type filter hook forward priority filter; policy accept;",
                   [f"oifname {ports} jump to_ns", f"iifname {ports} jump from_ns"])
    body += _chain("to_ns", None, [
        "oifname . iifname . ether saddr . ip saddr @to_ns accept",
        "arp operation request oifname . iifname . ether saddr . arp daddr ip @gw_arp accept",
        "drop",
    ])
    body += _chain("from_ns", None, ["iifname . oifname . ether daddr @from_ns accept", "drop"])
    return body
