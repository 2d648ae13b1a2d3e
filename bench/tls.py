"""tls: the API's request rate and a host stream's change latency with TLS on every hop, against the same
with TLS off.

TLS on: the coordinator serves the run's CA's certificate (testbed.pki) and reaches etcd over TLS with a
client certificate and user/password auth; TLS off: plain HTTP and a plain etcd. Each side in turn, on
its own etcd and coordinator replica, measured the same way in this process:
- request rate: `--clients` keep-alive connections making `GET /v1/hosts/{uuid}` (the token checked, the
  host read from etcd) for `--seconds`; on stderr also the rate when every request opens a new
  connection (a full handshake: what one `hs` command pays);
- stream latency: `--changes` VM creations on a host, each timed from before the API call to the moment
  its line reached the host's stream (testbed.streamhosts), p50/p99 on stderr.
Ours: requests per second with TLS; peer: without.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from agentkit.tls import client_context
from testbed.coordinators import Coordinator, admin_token
from testbed.etcd import EtcdCluster
from testbed.netns import Run
from testbed.pki import TestPki
from testbed.streamhosts import Arrivals, StreamHost

TIMEOUT = 60.0  # a change that never arrives is a bug, not a slow figure


@dataclass
class Figures:
    rate: float  # requests per second, keep-alive
    fresh_rate: float  # requests per second, a new connection each
    p50: float  # ms from a VM create to its host's stream
    p99: float


async def request_rate(url: str, ca: Path | None, token: str, path: str, clients: int, seconds: float,
                       fresh: bool) -> float:
    connector = aiohttp.TCPConnector(limit=clients, force_close=fresh, ssl=client_context(ca) if ca else True)
    headers = {"Authorization": f"Bearer {token}"}
    done = 0
    async with aiohttp.ClientSession(url, connector=connector, headers=headers) as session:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with session.get(path) as r:
                    await r.read()
                    assert r.status == 200, r.status
                done += 1
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return done / (time.perf_counter() - t0)


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


async def measure(co: Coordinator, args: argparse.Namespace) -> Figures:
    async with co.client() as api:
        host = await api.post("/v1/hosts", {"name": "read", "address": "198.18.0.8"})
    path = f"/v1/hosts/{host['uuid']}"
    await request_rate(co.url, co.ca, co.token, path, args.clients, 1.0, False)  # warm up
    rate = await request_rate(co.url, co.ca, co.token, path, args.clients, args.seconds, False)
    fresh = await request_rate(co.url, co.ca, co.token, path, args.clients, args.seconds / 2, True)
    ms = await stream_latency(co, args.changes)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return Figures(rate, fresh, q[49], q[98])


def side(run: Run, tls: bool, args: argparse.Namespace) -> Figures:
    name = "tls" if tls else "plain"
    etcd = EtcdCluster(run, size=1, name=f"etcd-{name}", tls=tls, auth=tls).start()
    co = Coordinator(run, etcd, admin_token(), name=f"coord-{name}", pki=TestPki(run) if tls else None).start()
    try:
        f = asyncio.run(measure(co, args))
    finally:
        co.stop()
        etcd.stop()
    print(f"{name}: {f.rate:.0f} req/s keep-alive, {f.fresh_rate:.0f} req/s a new connection each; "
          f"stream p50={f.p50:.1f} p99={f.p99:.1f} ms", file=sys.stderr)
    return f


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16, help="connections making requests at once")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds each request rate is measured")
    parser.add_argument("--changes", type=int, default=200, help="VM creations timed to the host's stream")
    args = parser.parse_args()
    with Run() as run:
        ours = side(run, True, args)
        peer = side(run, False, args)
    print(f"tls: ours={ours.rate:.0f} peer={peer.rate:.0f} ratio={ours.rate / peer.rate:.2f}")


if __name__ == "__main__":
    main()
