"""A running domain's NIC driven from the host, as a hostile guest would drive it.

`GuestNic` adds two of qemu's own network filters to the domain's netdev (over the QEMU monitor, through
libvirt): a `filter-redirector` whose frames qemu sends out of the NIC into its libvirt-made tap exactly as
the guest's own frames, and a `filter-mirror` copying every frame the tap delivers toward the guest. The
guest kernel is bypassed, so a test can send any frame (forged MACs, addresses, DHCP `chaddr`) at any rate,
and see what the host answers, through the real qemu process, tap and bridge: when qemu exits, so does the
NIC. Frames carry the virtio-net header (`hdr_len`: 12 once the guest's driver negotiated VERSION_1, which
the tiny guest's has by its `HS-NIC` line); the mirror reports the length it sees, and a mismatch fails.

`SynSpray` is the attack of issue 13: SYNs to a TCP service every millisecond as some (MAC, IP), and for
every SYN-ACK that comes back the rest of a handshake with an HTTP GET, so any answer is both counted and
read.
"""

from __future__ import annotations

import random
import re
import secrets
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether

from testbed.libvirthost import LibvirtHost

_NETDEV = re.compile(r"\\ (\S+): index=\d+,type=tap")


class GuestNic:
    """Send frames as the guest of `domain` (its first NIC) and read what reaches it; `close()` detaches."""

    def __init__(self, host: LibvirtHost, domain: str, hdr_len: int = 12):
        self.host, self.domain, self.hdr_len = host, domain, hdr_len
        found = _NETDEV.search(self._hmp("info network"))
        if found is None:
            raise RuntimeError(f"no tap netdev in domain {domain}")
        tag = secrets.token_hex(3)
        self._ids = (f"hsin{tag}", f"hsout{tag}", f"hsred{tag}", f"hsmir{tag}")
        paths = [host.run.path(f"{i}.sock") for i in self._ids[:2]]
        for chardev, path in zip(self._ids[:2], paths, strict=True):
            self._hmp(f"chardev-add socket,id={chardev},path={path},server=on,wait=off")
        netdev = found.group(1)
        self._hmp(f"object_add filter-redirector,id={self._ids[2]},netdev={netdev},queue=rx,indev={self._ids[0]}")
        self._hmp(f"object_add filter-mirror,id={self._ids[3]},netdev={netdev},queue=tx,outdev={self._ids[1]},"
                  "vnet_hdr_support=on")
        self._in = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._in.connect(str(paths[0]))
        self._out = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._out.connect(str(paths[1]))
        self.received: list[tuple[float, bytes]] = []  # (monotonic time, frame) toward the guest
        self.alive = True
        self._reader = threading.Thread(target=self._read, name=f"guestnic {domain}", daemon=True)
        self._reader.start()

    def _hmp(self, command: str, rcs: tuple[int, ...] = (0,)) -> str:
        return self.host.virsh("qemu-monitor-command", self.domain, "--hmp", command, rcs=rcs)

    def send(self, frame: bytes) -> bool:
        """Out of the NIC; False once qemu is gone."""
        try:
            self._in.sendall(struct.pack("!I", len(frame) + self.hdr_len) + bytes(self.hdr_len) + frame)
        except OSError:
            self.alive = False
        return self.alive

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self._out.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                self.alive = False
                return
            buf += chunk
            while len(buf) >= 8:
                size, hdr = struct.unpack_from("!II", buf)
                if len(buf) < 8 + size:
                    break
                if hdr != self.hdr_len:
                    self.alive = False
                    raise RuntimeError(f"virtio-net header is {hdr} bytes, not {self.hdr_len}")
                self.received.append((time.monotonic(), buf[8 + hdr:8 + size]))
                buf = buf[8 + size:]

    def resolve(self, mac: str, ip: str, target: str, timeout: float = 5.0) -> str:
        """The MAC answering ARP for `target`, asked as (mac, ip)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.send(bytes(Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac, psrc=ip, pdst=target)))
            time.sleep(0.2)
            for _, raw in self.received:
                frame = Ether(raw)
                if ARP in frame and frame[ARP].op == 2 and frame[ARP].psrc == target and frame[ARP].pdst == ip:
                    return str(frame[ARP].hwsrc)
        raise TimeoutError(f"no ARP answer for {target} asked as {ip}")

    def close(self) -> None:
        """Detach the filters (if the domain still runs) and close the sockets."""
        if self.alive:
            for obj in self._ids[2:]:
                self._hmp(f"object_del {obj}", rcs=(0, 1))
        for s in (self._in, self._out):
            s.close()


def _checksum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_frame(src_mac: str, dst_mac: str, src: str, dst: str, sport: int, dport: int, flags: int, seq: int,
              ack: int = 0, payload: bytes = b"") -> bytes:
    """An Ethernet/IPv4/TCP frame, built by hand: scapy takes a millisecond, a spray sends one per millisecond."""
    addrs = socket.inet_aton(src) + socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload
    tcp = tcp[:16] + struct.pack("!H", _checksum(addrs + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0) + addrs
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return bytes.fromhex(dst_mac.replace(":", "") + src_mac.replace(":", "")) + b"\x08\x00" + ip + tcp


def _isn(port: int) -> int:
    """The sequence number a spray's SYN from `port` carries (ports < 65536: well inside 32 bits)."""
    return port * 1000


@dataclass
class SynSpray:
    """SYNs from (mac, ip) to (dst_mac, dst_ip, port) through `nic` every `interval` s, on one port each."""

    nic: GuestNic
    mac: str
    ip: str
    dst_mac: str
    dst_ip: str
    port: int = 80
    request: bytes = b"GET /latest/user-data HTTP/1.0\r\n\r\n"
    interval: float = 0.001
    sent: list[float] = field(default_factory=list)  # when each SYN left
    _ports: range = field(default_factory=lambda: range(random.randrange(20000, 50000, 1000), 65000))
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _tcp(self, sport: int, flags: int, seq: int, ack: int = 0, payload: bytes = b"") -> bytes:
        return tcp_frame(self.mac, self.dst_mac, self.ip, self.dst_ip, sport, self.port, flags, seq, ack, payload)

    def start(self) -> SynSpray:
        self._thread = threading.Thread(target=self._run, name=f"syn spray {self.ip}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        answered: set[int] = set()
        checked = 0
        for sport in self._ports:
            if self._stop.is_set() or not self.nic.send(self._tcp(sport, 0x02, _isn(sport))):
                return
            self.sent.append(time.monotonic())
            fresh, checked = self.nic.received[checked:], len(self.nic.received)
            for _, raw in fresh:
                tcp = self._synack(Ether(raw))
                if tcp is not None and tcp.dport not in answered:  # finish the handshake with the request
                    answered.add(tcp.dport)
                    self.nic.send(self._tcp(tcp.dport, 0x18, tcp.ack, tcp.seq + 1, self.request))
            time.sleep(self.interval)

    def _ours(self, frame: Ether) -> bool:
        """A TCP segment from the service to one of the ports our SYNs came from (not the guest's own)."""
        return (TCP in frame and frame[IP].dst == self.ip and frame[TCP].sport == self.port
                and self._ports.start <= frame[TCP].dport < self._ports.start + len(self.sent))

    def _synack(self, frame: Ether) -> TCP | None:
        """The answer to one of our SYNs: it acknowledges the sequence number we sent from that port (the
        guest's own connections, its boot's fetch of user-data, may use a port of our range too)."""
        if self._ours(frame) and frame[TCP].flags == "SA" and frame[TCP].ack == _isn(frame[TCP].dport) + 1:
            return frame[TCP]
        return None

    def answers(self) -> list[float]:
        """When each SYN-ACK to our SYNs reached the NIC."""
        return [at for at, raw in list(self.nic.received) if self._synack(Ether(raw)) is not None]

    def payload(self) -> bytes:
        """Every TCP byte the service sent back to the sprayed ports."""
        data = b""
        for _, raw in list(self.nic.received):
            frame = Ether(raw)
            if self._ours(frame):
                data += bytes(frame[TCP].payload)
        return data

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
