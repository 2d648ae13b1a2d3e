"""Host facts and capacity reported on connect."""

from __future__ import annotations

import os
import socket

from agentkit import SESSION, __version__
from agentkit.model import HostFacts


def _meminfo() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0]) // 1024
    return out


def gather(address: str | None, versions: dict[str, str]) -> HostFacts:
    mem = _meminfo()
    return HostFacts(hostname=socket.gethostname(), cpus=os.cpu_count() or 0, memory_mb=mem.get("MemTotal", 0),
                     free_memory_mb=mem.get("MemAvailable", 0), agent_version=__version__, agent_session=SESSION,
                     versions=versions, address=address)
