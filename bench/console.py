"""console: MiB/s and added p99 latency of our console path against websockify (PyPI) relaying the same
VNC session, same machine, same run, over the same transport: without TLS (the closing line) and with it.

The session is a real one: the tiny guest under qemu (TCG), its VNC server on a unix socket; the bench
records the server's side (handshake, a full-screen Raw update of 1280x800x32 bpp, a 64x32 one) and
`testbed.vncreplay` plays it back as fast as it is read, because qemu paces updates with a refresh timer
(a fixed ceiling that would measure qemu, not the relays). Each relay reaches the replayed VNC server as
it reaches a hypervisor's when deployed, the hop between control node and hypervisor being loopback TCP
here for both: ours is the whole production path, the console proxy (token resolved, websocket to the
client) plus the agent's tunnel (ticket checked, raw stream to the proxy over TCP) in two processes, the
tunnel reading the VM's console socket as it reads libvirt's (a unix socket), with the tokens in the test
bed's table instead of a coordinator (resolved once per connection, not per byte); the peer is one
websockify process relaying to a VNC server's TCP port, as nova-novncproxy reaches a compute node's qemu
(the same replay, on 127.0.0.1: with `--unix-target` it was spared the network hop that ours pays). Each
runs in a session of its own, as does the client.
Transports, printed on the `console transport:` line so that the comparison is seen to be fair:
- plain: the client reaches both relays over ws:// and our proxy reaches the tunnel over ws:// (TLS off
  everywhere, as `tls.plain_http` runs it: tests and development only);
- tls: the client reaches both over wss:// (websockify `--ssl-only`), our proxy reaches the tunnel over
  wss:// verifying it with the CA, as deployed; websockify reaches the VNC port in plain TCP, as its own
  deployments do by default: ours encrypts a hop that it does not.
- throughput: the client keeps 2 full-screen update requests in flight for SECONDS and counts the bytes;
  after a warm-up, PAIRS pairs of runs back to back, in alternating order, with a pause between runs so
  that one way's teardown does not fall on the other's run. The machine is shared, its load drifts: the
  ratio is the median of the pairs' own ratios (each pair ran under the same load), the rates are
  medians. CPU seconds per GiB of each relay process (summed over all runs, after the last one has
  ended) are printed too: a figure the load changes less, and the one that shows what a machine with
  a core per stage would get (ours is two stages, proxy and tunnel, websockify one);
- latency: SAMPLES round trips of the small update one at a time through each, and directly on the unix
  socket, interleaved; the added p99 is each path's p99 minus the direct one's.
Before measuring, the screen seen through each path must equal the one recorded from qemu.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl as ssl_
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from agentkit.tls import client_context
from testbed import guest_image
from testbed.certs import TestCA
from testbed.consolelab import Grants
from testbed.netns import Run
from testbed.ports import free_port
from testbed.procstat import stat_fields
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
            fields = stat_fields(int(stat.parent.name))
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


class Way:
    """One way to the replayed session: `open()` gives an RFB client over it (TLS verified with `ssl`);
    `stages` are its relay processes (name → process group)."""

    def __init__(self, name: str, url: str | None, socket_path: Path, stages: dict[str, int],
                 ssl: ssl_.SSLContext | None = None):
        self.name, self.url, self.socket_path, self.stages, self.ssl = name, url, socket_path, stages, ssl

    async def open(self, session: aiohttp.ClientSession) -> RfbClient:
        if self.url is None:
            src: SocketSource | WsSource = await SocketSource.unix(str(self.socket_path))
        else:
            src = WsSource(await session.ws_connect(self.url, protocols=("binary",), max_msg_size=0,
                                                    ssl=self.ssl or True))
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


@dataclass
class Rates:
    """Throughput of one comparison (one transport): MiB/s of each run, the ratio ours/peer of each pair,
    CPU seconds per GiB of each relay process over all runs."""

    mib: dict[str, list[float]]
    ratios: list[float]
    cpu: dict[str, float]

    def closing(self, name: str) -> str:
        return (f"{name}: ours={statistics.median(self.mib['ours']):.0f} "
                f"peer={statistics.median(self.mib['peer']):.0f} ratio={statistics.median(self.ratios):.3f}")


async def rates(ours: Way, peer: Way, session: aiohttp.ClientSession, full: int) -> Rates:
    """PAIRS pairs of runs of `ours` and `peer`, after a warm-up of each."""
    for way in (ours, peer):
        await throughput(way, session, full, WARMUP)
    await asyncio.sleep(SETTLE)
    mib: dict[str, list[float]] = {"ours": [], "peer": []}
    ratios: list[float] = []
    before = {**ours.cpu(), **peer.cpu()}
    for i in range(PAIRS):
        for way, side in ((ours, "ours"), (peer, "peer")) if i % 2 == 0 else ((peer, "peer"), (ours, "ours")):
            mib[side].append(await throughput(way, session, full, SECONDS))
            await asyncio.sleep(SETTLE)  # the closed connection's teardown ends before the next run
        ratios.append(mib["ours"][-1] / mib["peer"][-1])
    after = {**ours.cpu(), **peer.cpu()}
    gib = {stage: sum(mib[side]) * SECONDS / 1024 for way, side in ((ours, "ours"), (peer, "peer"))
           for stage in way.stages}
    return Rates(mib, ratios, {stage: (after[stage] - before[stage]) / gib[stage] for stage in before})


def report(name: str, r: Rates, ours: Way, peer: Way) -> None:
    """The comparison's runs (stderr) and its CPU line."""
    for side in ("ours", "peer"):
        print(f"{name} {side}: MiB/s {[round(x) for x in r.mib[side]]}", file=sys.stderr)
    print(f"{name} pair ratios ours/peer: {[round(x, 3) for x in r.ratios]}", file=sys.stderr)
    ours_cpu, peer_cpu = sum(r.cpu[s] for s in ours.stages), sum(r.cpu[s] for s in peer.stages)
    print(f"console cpu {name}: s/GiB ours={ours_cpu:.2f} ({', '.join(f'{s}={r.cpu[s]:.2f}' for s in ours.stages)}) "
          f"peer={peer_cpu:.2f}; a core per stage: ratio ~ {peer_cpu / max(r.cpu[s] for s in ours.stages):.2f}")


async def bench(rec: Recording, screen: bytes, replay: Path, ways: dict[str, tuple[Way, Way]]) -> None:
    """`ways`: transport → (ours, peer)."""
    every = [way for pair in ways.values() for way in pair]
    async with aiohttp.ClientSession() as session:
        for path in every:
            client = await path.open(session)
            await client.refresh()
            await client.src.close()
            if client.screen.rgb() != screen:
                raise SystemExit(f"{path.name}: the screen differs from the one recorded from qemu")
        direct = Way("direct", None, replay, {})
        lat = {name: p99(t) for name, t in (await round_trips([direct, *every], session, SAMPLES)).items()}
        results = {transport: await rates(ours, peer, session, len(rec.full))
                   for transport, (ours, peer) in ways.items()}
    print(f"recorded session: {rec.size[0]}x{rec.size[1]} Raw, full update {len(rec.full) / 2**20:.1f} MiB, "
          f"{WINDOW} in flight, {PAIRS} pairs of {SECONDS:g}s; ours = proxy + agent tunnel, peer = websockify",
          file=sys.stderr)
    print("console transport: plain = ws:// client→relay for both, ws:// proxy→tunnel (TLS off: tests only); "
          "tls = wss:// client→relay for both (websockify --ssl-only), wss:// proxy→tunnel (as deployed); "
          "the peer reaches the VNC server's TCP port in plain (as deployed), our tunnel its unix socket")
    for transport, r in results.items():
        report(transport, r, *ways[transport])
    added = {w.name: (lat[w.name] - lat["direct"]) * 1e6 for w in every}
    print(f"console latency: added p99 per {SMALL[2]}x{SMALL[3]} update round trip ({SAMPLES} each): "
          + "; ".join(f"{t} ours={added[o.name]:.0f}µs peer={added[p.name]:.0f}µs" for t, (o, p) in ways.items())
          + f" (direct p99 {lat['direct'] * 1e6:.0f}µs)")
    print(results["tls"].closing("console tls"))
    print(results["plain"].closing("console"))


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"nothing listens on 127.0.0.1:{port}")
        time.sleep(0.05)


def start_ways(run: Run, vm: str, replay: Path, vnc_port: int, ca: TestCA | None) -> tuple[Way, Way]:
    """Our path (tunnel and proxy processes) and a websockify, on `replay`; TLS on every hop with a `ca`."""
    transport = "tls" if ca else "plain"
    tunnel_port, proxy_port, peer_port = free_port(), free_port(), free_port()
    grants = Grants(f"{'wss' if ca else 'ws'}://127.0.0.1:{tunnel_port}")
    token = grants.issue(vm, "vnc", ttl=3600)
    grants.save(run.path(f"grants-{transport}.json"))
    tls = ["--tls", str(ca.dir)] if ca else []
    py = [sys.executable, "-m", "testbed.consolelab"]
    tunnel = run.popen([*py, "tunnel", str(tunnel_port), f"vnc={replay}", *tls], f"tunnel-{transport}")
    proxy = run.popen([*py, "proxy", str(proxy_port), str(run.path(f"grants-{transport}.json")), *tls],
                      f"proxy-{transport}")
    peer_tls = []
    if ca:
        pair = ca.issue("websockify")
        peer_tls = [f"--cert={pair.cert}", f"--key={pair.key}", "--ssl-only"]
    websockify = run.popen([str(Path(sys.executable).with_name("websockify")), *peer_tls,
                            f"127.0.0.1:{peer_port}", f"127.0.0.1:{vnc_port}"], f"websockify-{transport}")
    for port in (tunnel_port, proxy_port, peer_port):
        wait_port(port)
    scheme, context = ("https", client_context(ca.ca)) if ca else ("http", None)
    return (Way(f"ours-{transport}", f"{scheme}://127.0.0.1:{proxy_port}/consoles/{vm}/vnc/ws?token={token}",
                replay, {"proxy": proxy.pid, "tunnel": tunnel.pid}, context),
            Way(f"peer-{transport}", f"{scheme}://127.0.0.1:{peer_port}/", replay, {"websockify": websockify.pid},
                context))


def main() -> None:
    with Run() as run:
        vm = QemuVm(run, guest_image.build(), name="bench-vm").start()
        vm.wait_serial(r"HS-SHELLS")
        rec, screen = asyncio.run(record(vm))
        vm.stop()
        rec.save(run.path("recording"))
        replay = run.path("replay.sock")
        run.popen([sys.executable, "-m", "testbed.vncreplay", str(replay), str(run.path("recording"))], "replay")
        vnc_port = free_port()
        run.popen([sys.executable, "-m", "testbed.vncreplay", f"127.0.0.1:{vnc_port}", str(run.path("recording"))],
                  "replay-tcp")
        wait_port(vnc_port)
        ca = TestCA(run.path("pki"))
        ways = {"plain": start_ways(run, vm.uuid, replay, vnc_port, None),
                "tls": start_ways(run, vm.uuid, replay, vnc_port, ca)}
        asyncio.run(bench(rec, screen, replay, ways))


if __name__ == "__main__":
    main()
