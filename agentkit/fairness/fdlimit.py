"""How many guest connections a service may hold: a share of the process's descriptor limit.

The agent's unit raises the limit (`LimitNOFILE`), but a service must survive whatever limit it got:
sockets, netlink handles, libvirt and the journal need descriptors too, so guests get a share of what
is left after a reserve.
"""

from __future__ import annotations

import resource

RESERVE = 256  # descriptors kept for everything but guest connections
MINIMUM = 16


def fd_share(share: float) -> int:
    """`share` of the soft descriptor limit beyond the reserve (at least MINIMUM)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(MINIMUM, int((soft - RESERVE) * share))
