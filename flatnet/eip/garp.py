"""Gratuitous ARP for VIPs: the host that just took a VIP tells the public L2 its MAC.

Linux does not announce IPv4 addresses when they are added, so each new VIP is announced from the
EIP namespace's public device with a raw frame (an ARP request whose sender and target are the VIP,
as `arping -U` sends), repeated a few times in the background in case one is lost. Neighbours that
cache the VIP (routers, other hosts) update their entry at once, so a VIP that moved between hosts
is reachable again without waiting for their ARP cache to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Iterable

log = logging.getLogger(__name__)
ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6
_ARP = struct.Struct("!6s6sHHHBBH6s4s6s4s")


def frame(mac: str, vip: ipaddress.IPv4Address) -> bytes:
    """A broadcast ARP request announcing `vip` at `mac` (sender IP == target IP)."""
    hw, ip = bytes.fromhex(mac.replace(":", "")), vip.packed
    return _ARP.pack(BROADCAST, hw, ETH_P_ARP, 1, 0x0800, 6, 4, 1, hw, ip, b"\0" * 6, ip)


class Announcer:
    """Sends announcements now and repeats them `count - 1` times, `interval` seconds apart."""

    def __init__(self, count: int = 3, interval: float = 1.0):
        self.count = count
        self.interval = interval
        self._tasks: set[asyncio.Task[None]] = set()

    def announce(self, sock: socket.socket, mac: str, vips: Iterable[ipaddress.IPv4Address]) -> None:
        """Announce `vips` on `sock` (a raw ARP socket bound to the VIPs' device); takes ownership of it."""
        frames = [frame(mac, v) for v in sorted(vips)]
        if not frames or self.count < 1:
            sock.close()
            return
        _send(sock, frames)
        if self.count == 1:
            sock.close()
            return
        task = asyncio.get_running_loop().create_task(self._repeat(sock, frames))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _repeat(self, sock: socket.socket, frames: list[bytes]) -> None:
        try:
            for _ in range(self.count - 1):
                await asyncio.sleep(self.interval)
                _send(sock, frames)
        finally:
            sock.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _send(sock: socket.socket, frames: list[bytes]) -> None:
    """Best effort: a closed socket (namespace retired meanwhile) or a full queue only loses one round."""
    try:
        for f in frames:
            sock.send(f)
    except OSError as e:
        log.warning("gratuitous ARP not sent", extra={"fields": {"error": str(e)}})
