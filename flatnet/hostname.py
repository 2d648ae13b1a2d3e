"""The guest host name: one rule for the DHCP hostname and domain options, the DNS records and the metadata
APIs, so a guest hears the same name from each."""

from __future__ import annotations

import re

_INVALID = re.compile(r"[^a-z0-9-]+")


def hostname(vm_name: str) -> str:
    """A valid DNS label (RFC 1123) from a free-form VM name: `My VM_1` -> `my-vm-1`, `!!!` -> `vm`."""
    label = _INVALID.sub("-", vm_name.lower()).strip("-")[:63].rstrip("-")
    return label or "vm"  # not `vm-<uuid>`: a DNS record carries the VM name, not its uuid


def domain_name(domain: str) -> str:
    """An L3's domain as every service says it (DHCP option 15, DNS, metadata): lower case, no outer dots."""
    return domain.strip(".").lower()


def fqdn(vm_name: str, domain: str | None) -> str:
    """`<label>.<domain>` (or the bare label when the L3 has no domain), without the trailing dot."""
    label = hostname(vm_name)
    return f"{label}.{domain_name(domain)}" if domain else label
