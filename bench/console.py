"""console: MiB/s and added p99 latency of our console path against websockify (PyPI) relaying the same
VNC session, same machine, same run.

The session is a real one: the tiny guest under qemu (TCG), its VNC server on a unix socket; the bench
records the server's side (handshake, a full-screen Raw update of 1280x800x32 bpp, a 64x32 one) and
`testbed.vncreplay` plays it back from a unix socket as fast as it is read, because qemu paces updates
with a refresh timer (a fixed ceiling that would measure qemu, not the relays). Both relays read that
socket: ours is the whole production path, the console proxy (token resolved, websocket to the browser)
plus the agent's tunnel (ticket checked, websocket to the proxy) in two processes, with the tokens in the
test bed's table instead of a coordinator (resolved once per connection, not per byte); the peer is one
websockify process (`--unix-target`). Each runs in a session of its own, as does the client.
- throughput: the client keeps 2 full-screen update requests in flight for SECONDS and counts the bytes;
  after a warm-up, PAIRS pairs of runs back to back, in alternating order, with a pause between runs so
  that one way's teardown does not fall on the other's run. The machine is shared, its load drifts: the
  ratio is the median of the pairs' own ratios (each pair ran under the same load), the rates are
  medians. CPU seconds per GiB of each relay process (summed over all runs, after the last one has
  ended) are printed too: a figure the load changes less, and the one that shows what a machine with
  a core per stage would get (ours is two stages, proxy and tunnel, websockify one);
- latency: SAMPLES round trips of the small update one at a time through each, and directly on the
  socket, interleaved; the added p99 is each path's p99 minus the direct one's.
Before measuring, the screen seen through each path must equal the one recorded from qemu.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import aiohttp

from testbed import guest_image
from testbed.consolelab import Grants
from testbed.netns import Run
from testbed.ports import free_port
from testbed.qemuvm import QemuVm
from testbed.rfb import RfbClient, SocketSource, WsSource
from testbed.vncreplay import Recording

PAIRS, SECONDS, WARMUP, SETTLE, SAMPLES, WINDOW = 7, 2.0, 1.0, 0.3, 2000, 2
SMALL = (0, 0, 64, 32)


class Recorder(SocketSource):
    """A socket source that keeps every byte the client read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        super().__init__(reader, writer)
        self.log = bytearray()

    async def readexactly(self, n: int) -> bytes:
        data = await super().readexactly(n)
        self.log += data
        return data


async def record(vm: QemuVm) -> tuple[Recording, bytes]:
    """The server's side of a real VNC session with the guest, and the screen its full update showed (RGB)."""
    src = Recorder(*await asyncio.open_unix_connection(str(vm.socket("vnc")), limit=1 << 24))
    client = RfbClient(src)
    await client.handshake()
    count = src.log[12]
    version, security, init = bytes(src.log[:12]), bytes(src.log[12:13 + count]), bytes(src.log[13 + count:])
    updates: list[bytes] = []
    src.log = bytearray()
    await client.refresh()
    updates.append(bytes(src.log))
    screen = client.screen.rgb()  # what the full update shows (the small one may be newer: a cursor blinks)
    src.log = bytearray()
    await client.request(False, *SMALL)
    await client.update()
    updates.append(bytes(src.log))
    await src.close()
    return Recording(version, security, init, updates[0], updates[1]), screen


def cpu_seconds(pgid: int) -> float:
    """CPU time of the processes of a process group, and of the children they reaped."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


class Way:
    """One way to the replayed session: `open()` gives an RFB client over it; `stages` are its relay
    processes (name → process group)."""

    def __init__(self, name: str, url: str | None, socket_path: Path, stages: dict[str, int]):
        self.name, self.url, self.socket_path, self.stages = name, url, socket_path, stages

    async def open(self, session: aiohttp.ClientSession) -> RfbClient:
        if self.url is None:
            src: SocketSource | WsSource = await SocketSource.unix(str(self.socket_path))
        else:
            src = WsSource(await session.ws_connect(self.url, protocols=("binary",), max_msg_size=0))
        client = RfbClient(src)
        await client.handshake()
        return client

    def cpu(self) -> dict[str, float]:
        return {stage: cpu_seconds(pgid) for stage, pgid in self.stages.items()}


async def throughput(path: Way, session: aiohttp.ClientSession, full: int, seconds: float) -> float:
    """MiB/s of full-screen updates with WINDOW requests in flight, counted as raw bytes off the wire."""
    client = await path.open(session)
    src = client.src
    assert isinstance(src, WsSource)
    for _ in range(WINDOW):
        await client.request()
    received, start = 0, time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        msg = await src.ws.receive()
        before, received = received, received + len(msg.data)
        for _ in range(received // full - before // full):
            await client.request()
    await src.close()
    return received / elapsed / 2**20


async def round_trips(ways: list[Way], session: aiohttp.ClientSession, samples: int) -> dict[str, list[float]]:
    """Round trip times of the small update on each way, interleaved (one on each, in turn) so that the
    machine's changing load falls on all of them alike."""
    clients = [await w.open(session) for w in ways]
    times: dict[str, list[float]] = {w.name: [] for w in ways}
    for _ in range(samples):
        for way, client in zip(ways, clients, strict=True):
            t0 = time.perf_counter()
            await client.request(False, *SMALL)
            await client.update()
            times[way.name].append(time.perf_counter() - t0)
    for client in clients:
        await client.src.close()
    return times


def p99(times: list[float]) -> float:
    return statistics.quantiles(times, n=100)[98]


async def rates(ours: Way, peer: Way, session: aiohttp.ClientSession, full: int) -> tuple[
        dict[str, list[float]], list[float], dict[str, float]]:
    """Throughput of PAIRS pairs of runs: MiB/s per way, the ratio ours/peer of each pair, and CPU seconds
    per GiB of each relay process over all runs."""
    for way in (ours, peer):
        await throughput(way, session, full, WARMUP)
    await asyncio.sleep(SETTLE)
    mib: dict[str, list[float]] = {"ours": [], "peer": []}
    ratios: list[float] = []
    before = {**ours.cpu(), **peer.cpu()}
    for i in range(PAIRS):
        for way in (ours, peer) if i % 2 == 0 else (peer, ours):
            mib[way.name].append(await throughput(way, session, full, SECONDS))
            await asyncio.sleep(SETTLE)  # the closed connection's teardown ends before the next run
        ratios.append(mib["ours"][-1] / mib["peer"][-1])
    after = {**ours.cpu(), **peer.cpu()}
    gib = {stage: sum(mib[way.name]) * SECONDS / 1024 for way in (ours, peer) for stage in way.stages}
    return mib, ratios, {stage: (after[stage] - before[stage]) / gib[stage] for stage in before}


async def bench(rec: Recording, screen: bytes, replay: Path, ours: Way, peer: Way) -> None:
    async with aiohttp.ClientSession() as session:
        for path in (ours, peer):
            client = await path.open(session)
            await client.refresh()
            await client.src.close()
            if client.screen.rgb() != screen:
                raise SystemExit(f"{path.name}: the screen differs from the one recorded from qemu")
        direct = Way("direct", None, replay, {})
        lat = {name: p99(t) for name, t in (await round_trips([direct, ours, peer], session, SAMPLES)).items()}
        mib, ratios, cpu = await rates(ours, peer, session, len(rec.full))
    for name in ("ours", "peer"):
        print(f"{name}: MiB/s {[round(r) for r in mib[name]]}", file=sys.stderr)
    print(f"pair ratios ours/peer: {[round(r, 3) for r in ratios]}", file=sys.stderr)
    print(f"recorded session: {rec.size[0]}x{rec.size[1]} Raw, full update {len(rec.full) / 2**20:.1f} MiB, "
          f"{WINDOW} in flight, {PAIRS} pairs of {SECONDS:g}s; ours = proxy + agent tunnel, peer = websockify",
          file=sys.stderr)
    ours_cpu = sum(cpu[s] for s in ours.stages)
    print(f"console cpu: s/GiB ours={ours_cpu:.2f} ({', '.join(f'{s}={cpu[s]:.2f}' for s in ours.stages)}) "
          f"peer={cpu['websockify']:.2f}; a core per stage: ratio ~ "
          f"{cpu['websockify'] / max(cpu[s] for s in ours.stages):.2f}")
    added = {n: (lat[n] - lat["direct"]) * 1e6 for n in ("ours", "peer")}
    print(f"console latency: added p99 per {SMALL[2]}x{SMALL[3]} update round trip ({SAMPLES} each): "
          f"ours={added['ours']:.0f}µs peer={added['peer']:.0f}µs (direct p99 {lat['direct'] * 1e6:.0f}µs)")
    print(f"console: ours={statistics.median(mib['ours']):.0f} peer={statistics.median(mib['peer']):.0f} "
          f"ratio={statistics.median(ratios):.3f}")


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"nothing listens on 127.0.0.1:{port}")
        time.sleep(0.05)


def main() -> None:
    with Run() as run:
        vm = QemuVm(run, guest_image.build(), name="bench-vm").start()
        vm.wait_serial(r"HS-SHELLS")
        rec, screen = asyncio.run(record(vm))
        vm.stop()
        rec.save(run.path("recording"))
        replay = run.path("replay.sock")
        run.popen([sys.executable, "-m", "testbed.vncreplay", str(replay), str(run.path("recording"))], "replay")
        tunnel_port, proxy_port, peer_port = free_port(), free_port(), free_port()
        grants = Grants(f"ws://127.0.0.1:{tunnel_port}")
        token = grants.issue(vm.uuid, "vnc", ttl=3600)
        grants.save(run.path("grants.json"))
        py = [sys.executable, "-m", "testbed.consolelab"]
        tunnel = run.popen([*py, "tunnel", str(tunnel_port), f"vnc={replay}"], "tunnel")
        proxy = run.popen([*py, "proxy", str(proxy_port), str(run.path("grants.json"))], "proxy")
        websockify = run.popen([str(Path(sys.executable).with_name("websockify")), f"--unix-target={replay}",
                                f"127.0.0.1:{peer_port}"], "websockify")
        for port in (tunnel_port, proxy_port, peer_port):
            wait_port(port)
        ours = Way("ours", f"http://127.0.0.1:{proxy_port}/consoles/{vm.uuid}/vnc/ws?token={token}", replay,
                   {"proxy": proxy.pid, "tunnel": tunnel.pid})
        peer = Way("peer", f"http://127.0.0.1:{peer_port}/", replay, {"websockify": websockify.pid})
        asyncio.run(bench(rec, screen, replay, ours, peer))


if __name__ == "__main__":
    main()
