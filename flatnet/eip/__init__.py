"""Distributed EIP on the VM's host: one namespace per (public L3, private L3) pair, NAT maps inside.

`EipDataplane` (dataplane.py) is the facade the composition root calls; `plan` derives the pairs from
desired state, `rules` renders their nftables tables, `netns` keeps a pair's namespace, `garp` announces
VIPs that arrive. Layout and packet path: docs/eip.md.
"""

from flatnet.eip.dataplane import EipDataplane, EipStatus
from flatnet.eip.settings import EipSettings

__all__ = ["EipDataplane", "EipSettings", "EipStatus"]
