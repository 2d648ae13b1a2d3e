"""A host's view of the desired state, and the lines the stream hands it out as.

The view is every cluster-wide item (`/hs/d/all/`), the host's own items (`/hs/d/host/<host>/`) and
the per-L3 items (DNS records, `keys.scope`) of each L3 network the host *has*: one of its VMs has a
NIC on it, or an EIP from it is bound to a NIC of one of its VMs (the host then serves that public
L3). Lines (docs/architecture.md, "Host stream"): a `snapshot` (the whole view at one revision, and
the timeline of that revision once etcd's data was restored: coordinator/etcd/timeline.py),
`changes` (the puts and deletes that take the view to a newer revision; one transaction's events
always travel together) and `progress` (nothing else in the view changed up to that revision).
"""

from __future__ import annotations

import json
from typing import Any

Doc = dict[str, Any]


def vm_l3s(spec: object) -> frozenset[str]:
    """The L3 networks a VM's desired object (as stored) gives its host."""
    nics = spec.get("nics") if isinstance(spec, dict) else None
    out: set[str] = set()
    for nic in nics if isinstance(nics, list) else ():
        if not isinstance(nic, dict):
            continue
        eip = nic.get("eip")
        for l3 in (nic.get("l3_uuid"), eip.get("public_l3_uuid") if isinstance(eip, dict) else None):
            if isinstance(l3, str):
                out.add(l3)
    return frozenset(out)


def snapshot(rev: int, items: dict[str, object], timeline: str = "") -> Doc:
    return {"type": "snapshot", "rev": rev, "items": items, **({"timeline": timeline} if timeline else {})}


def changes(rev: int, puts: dict[str, object], deletes: list[str]) -> Doc:
    return {"type": "changes", "rev": rev, "puts": puts, "deletes": deletes}


def progress(rev: int) -> Doc:
    return {"type": "progress", "rev": rev}


def line(doc: Doc) -> bytes:
    """One NDJSON line."""
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"
