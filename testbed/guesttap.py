"""A VM's network stack in a namespace: a tap device there, bridged to the real qemu VM's NIC (`GuestNic`).

What the namespace's kernel sends on the tap leaves through the domain's NIC, its libvirt-made tap on the
host and the host's bridge, exactly as the guest's own frames would; what the host delivers to the NIC
comes back out of the tap. So ordinary programs (`testbed.attacks`, udhcpc, DNS and HTTP clients) speak as
the guest, with a real kernel TCP stack, through the real qemu process. The guest itself must leave the
NIC to us: booted with `hsnet=raw`, its interface is up (the driver takes frames) but has no address, so
its kernel answers nothing. Every frame toward the guest is also scanned for `watch` bytes (`seen`).

The host hands a virtio NIC its TCP and UDP segments with the checksum left to the guest (offload); the
mirror drops the virtio header that says so, so the checksums are completed here before the namespace's
kernel sees the frames (it would drop them).
"""

from __future__ import annotations

import array
import fcntl
import os
import select
import struct
import sys
import threading
import time

from pyroute2 import netns as pr_netns

from testbed.guestnic import GuestNic
from testbed.vmns import VmNs

_TUNSETIFF = 0x400454CA
_IFF_TAP, _IFF_NO_PI = 0x0002, 0x1000


def _ones_complement(data: bytes) -> int:
    words = array.array("H", data + b"\0" * (len(data) % 2))
    if sys.byteorder == "little":
        words.byteswap()
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def with_checksum(frame: bytes) -> bytes:
    """`frame` with its IPv4 TCP or UDP checksum computed (other frames as they are)."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] not in (6, 17):
        return frame
    ihl, proto = (frame[14] & 15) * 4, frame[23]
    end = 14 + struct.unpack_from("!H", frame, 16)[0]
    l4 = bytearray(frame[14 + ihl:end])
    at = 16 if proto == 6 else 6
    if len(l4) < at + 2:
        return frame
    l4[at:at + 2] = b"\0\0"
    csum = _ones_complement(frame[26:34] + struct.pack("!BBH", 0, proto, len(l4)) + bytes(l4))
    l4[at:at + 2] = struct.pack("!H", csum or 0xFFFF)
    return frame[:14 + ihl] + bytes(l4) + frame[end:]


class GuestTap:
    def __init__(self, vm: VmNs, nic: GuestNic, watch: bytes = b""):
        self.vm, self.nic, self.watch = vm, nic, watch
        self.seen = 0  # frames toward the guest that held `watch`
        self.frames = 0
        vm.ns.ip("tuntap", "add", "dev", vm.ifname, "mode", "tap")
        vm.ns.ip("link", "set", vm.ifname, "address", vm.nic.mac)
        self.fd = self._open()
        vm.ns.ip("link", "set", vm.ifname, "up")
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, name=f"guesttap {vm.role} {f.__name__}", daemon=True)
                         for f in (self._out, self._in)]
        for t in self._threads:
            t.start()

    def _open(self) -> int:
        """The tap's file descriptor, opened inside the namespace (the device is looked up there)."""
        out: dict[str, int | BaseException] = {}

        def work() -> None:
            try:
                pr_netns.setns(self.vm.ns.name, flags=0)
                fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
                fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", self.vm.ifname.encode(), _IFF_TAP | _IFF_NO_PI))
                out["fd"] = fd
            except BaseException as e:  # handed to the caller
                out["fd"] = e

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        if isinstance(out["fd"], BaseException):
            raise out["fd"]
        return out["fd"]

    def _out(self) -> None:
        """Frames the namespace sends: out of the VM's NIC."""
        while not self._stop.is_set():
            if not select.select([self.fd], [], [], 0.2)[0]:
                continue
            try:
                frame = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not self.nic.send(frame):
                return

    def _in(self) -> None:
        """Frames the host delivers to the VM's NIC: into the namespace."""
        received = self.nic.received
        while not self._stop.is_set():
            if not received:
                time.sleep(0.0005)
                continue
            batch = received[:]
            del received[:len(batch)]
            for _, frame in batch:
                self.frames += 1
                if self.watch and self.watch in frame:
                    self.seen += 1
                try:
                    os.write(self.fd, with_checksum(frame))
                except OSError:  # the namespace's queue is full: a dropped frame, as on a wire
                    pass

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        os.close(self.fd)
        self.nic.close()
