"""tls: the API's request rate and a host stream's change latency with TLS on every hop, against the same
with TLS off.

TLS on: the coordinator serves a certificate of the run's CA (testbed.pki) and reaches etcd over TLS with a
client certificate and user/password auth; TLS off: plain HTTP and a plain etcd. Both run at once, each
on its own etcd, and are measured the same way, in alternating order:
- request rate: wrk (1 thread, `--connections` keep-alive connections) making `GET /v1/hosts/{uuid}` (the
  token checked, the host and its heartbeat read from etcd), `--pairs` pairs of runs of `--seconds`, each
  pair back to back. The machine is shared and its load drifts: the ratio is the median of the pairs' own
  ratios (each pair ran under the same load), the rates are medians. On stderr also the CPU per request
  of the coordinator and of etcd (figures the load changes less), and the rate when every request opens a
  new connection (a full handshake: what one `hs` command pays);
- stream latency: `--changes` VM creations on a host, each timed from before the API call to the moment
  its line reached the host's stream (testbed.streamhosts), p50/p99 on stderr.
Ours: requests per second with TLS; peer: without.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

from agentkit.tls import client_context
from testbed.coordinators import Coordinator, admin_token
from testbed.cpu import cpu_seconds
from testbed.etcd import EtcdCluster
from testbed.netns import Run
from testbed.pki import TestPki
from testbed.streamhosts import Arrivals, StreamHost

TIMEOUT = 60.0  # a change that never arrives is a bug, not a slow figure


@dataclass
class Side:
    name: str
    co: Coordinator
    etcd: EtcdCluster
    path: str = ""
    rates: list[float] = field(default_factory=list)
    cpu_ms: dict[str, list[float]] = field(default_factory=lambda: {"coordinator": [], "etcd": []})  # per request

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    def pids(self) -> dict[str, list[int]]:
        assert self.co.proc is not None
        return {"coordinator": [self.co.proc.pid], "etcd": [m.proc.pid for m in self.etcd.members if m.proc]}


def wrk(url: str, token: str, connections: int, seconds: float, close: bool = False) -> tuple[float, int]:
    """Requests/s and requests of one wrk run (`close`: a new connection, and handshake, per request)."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-H", f"Authorization: Bearer {token}", url]
    if close:
        argv[1:1] = ["-H", "Connection: close"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    rate, requests = re.search(r"Requests/sec:\s+([\d.]+)", out), re.search(r"(\d+) requests in", out)
    if "Non-2xx" in out or rate is None or requests is None or requests.group(1) == "0":
        raise SystemExit(f"wrk against {url}:\n{out}")
    return float(rate.group(1)), int(requests.group(1))


def run_wrk(side: Side, args: argparse.Namespace) -> None:
    pids = side.pids()
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    rate, requests = wrk(side.co.url + side.path, side.co.token, args.connections, args.seconds)
    side.rates.append(rate)
    for k, p in pids.items():
        side.cpu_ms[k].append((cpu_seconds(p) - before[k]) * 1000 / requests)


async def prepare(side: Side) -> None:
    async with side.co.client() as api:
        host = await api.post("/v1/hosts", {"name": "read", "address": "198.18.0.8"})
    side.path = f"/v1/hosts/{host['uuid']}"


async def stream_latency(co: Coordinator, changes: int) -> list[float]:
    async with co.client() as api:
        host = await api.post("/v1/hosts", {"name": "streamed", "address": "198.18.0.7"})
        l2 = await api.post("/v1/l2-networks", {"name": "tls", "physical_interface": "eth0"})
        l3 = await api.post("/v1/l3-networks", {"name": "tls", "l2_uuid": l2["uuid"], "cidr": "10.7.0.0/16"})
        arrivals = Arrivals()
        stream = StreamHost(co.url, host["uuid"], host["token"], arrivals,
                            client_context(co.ca) if co.ca else None)
        await stream.open()
        await asyncio.wait_for(stream.ready.wait(), TIMEOUT)
        out = []
        try:
            for n in range(changes):
                t0 = time.perf_counter()
                vm = await api.post("/v1/vms", {"name": f"t{n}", "host_uuid": host["uuid"], "state": "Stopped",
                                                "l3_network_uuids": [l3["uuid"]]})
                key = f"vm/{vm['uuid']}"
                await arrivals.wait(key, 1, TIMEOUT)
                out.append((stream.seen[key] - t0) * 1000)
        finally:
            stream.close()
        return out


def measure(sides: list[Side], args: argparse.Namespace) -> list[float]:
    """The pairs' ratios (first side's rate over the second's), after each side's report on stderr."""
    for side in sides:
        asyncio.run(prepare(side))
        wrk(side.co.url + side.path, side.co.token, args.connections, 2)  # warm up
    ratios = []
    for i in range(args.pairs):
        for side in sides if i % 2 == 0 else sides[::-1]:
            run_wrk(side, args)
        ratios.append(sides[0].rates[-1] / sides[1].rates[-1])
    for side in sides:
        fresh, _ = wrk(side.co.url + side.path, side.co.token, args.connections, args.seconds, close=True)
        q = statistics.quantiles(asyncio.run(stream_latency(side.co, args.changes)), n=100, method="inclusive")
        cpu = ", ".join(f"{k} {statistics.median(v):.3f}" for k, v in side.cpu_ms.items())
        print(f"{side.name}: {side.rate:.0f} req/s keep-alive (runs {', '.join(f'{r:.0f}' for r in side.rates)}; "
              f"CPU ms/request: {cpu}), {fresh:.0f} req/s with a new connection each; "
              f"stream p50={q[49]:.1f} p99={q[98]:.1f} ms", file=sys.stderr)
    print(f"pair ratios: {', '.join(f'{r:.2f}' for r in ratios)}", file=sys.stderr)
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=16, help="wrk's keep-alive connections")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds of each wrk run")
    parser.add_argument("--pairs", type=int, default=11, help="pairs of runs, in alternating order")
    parser.add_argument("--changes", type=int, default=200, help="VM creations timed to the host's stream")
    args = parser.parse_args()
    with Run() as run:
        sides = []
        for name, tls in (("tls", True), ("plain", False)):
            etcd = EtcdCluster(run, size=1, name=f"etcd-{name}", tls=tls, auth=tls).start()
            co = Coordinator(run, etcd, admin_token(), name=f"coord-{name}", pki=TestPki(run) if tls else None)
            sides.append(Side(name, co.start(), etcd))
        ratios = measure(sides, args)
    print(f"tls: ours={sides[0].rate:.0f} peer={sides[1].rate:.0f} ratio={statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
