"""What a metadata API flavour declares: its name, the address it listens on, its routes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from flatnet.metadata.http.routes import Route


class Listen(Enum):
    """Where a flavour is served in an L3's namespace."""

    METADATA_ADDRESS = "metadata"  # agentkit.addr.METADATA_ADDRESS: EC2 and OpenStack
    DHCP_ADDRESS = "dhcp"  # the L3's DHCP server address, as a per-network virtual router


@dataclass(frozen=True)
class Flavour:
    """One API flavour: one module of this package, listed in its `FLAVOURS`."""

    name: str
    listen: Listen
    routes: Sequence[Route]
