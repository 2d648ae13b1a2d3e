"""Gratuitous ARP: the frame announcing a VIP, and the announcer's repeats (over a socket pair)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from scapy.layers.l2 import ARP, Ether

from flatnet.eip.garp import Announcer, frame


def test_gratuitous_arp_frame():
    pkt = Ether(frame("02:11:22:33:44:55", ipaddress.IPv4Address("203.0.113.10")))
    assert pkt.dst == "ff:ff:ff:ff:ff:ff" and pkt.src == "02:11:22:33:44:55"
    arp = pkt[ARP]
    assert (arp.op, arp.psrc, arp.pdst, arp.hwsrc) == (1, "203.0.113.10", "203.0.113.10", "02:11:22:33:44:55")


async def test_announcer_repeats_then_closes_the_socket():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    vips = [ipaddress.IPv4Address("203.0.113.11"), ipaddress.IPv4Address("203.0.113.10")]
    announcer = Announcer(count=3, interval=0.01)
    announcer.announce(ours, "02:11:22:33:44:55", vips)
    async with asyncio.timeout(5):
        while ours.fileno() != -1:  # closed after the last repeat
            await asyncio.sleep(0.01)
    theirs.setblocking(False)
    got = []
    while True:
        try:
            got.append(theirs.recv(100))
        except BlockingIOError:
            break
    assert got == [frame("02:11:22:33:44:55", v) for v in sorted(vips)] * 3
    await announcer.close()
    theirs.close()
