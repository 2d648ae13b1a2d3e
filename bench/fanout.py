"""fanout: how fast a desired-state change reaches 1,000 hosts' streams through 2 coordinator replicas,
against 1,000 raw etcd watchers on one prefix.

Real etcd, two real replicas, 1,000 registered hosts (real tokens) whose streams are consumed in this
process (testbed.streamhosts, half on each replica), each host with one VM on one of 20 L3 networks that
offer DNS (so every VM has a DNS record, routed to the hosts with its L3). Timed from before the API call
to the moment the line's bytes reached the host's socket reader:
- one host: VM creations on random hosts (alternating replicas), p99 to the target host;
- all hosts: L3 updates (a service attached or detached), p99 over all 1,000 hosts of every update;
- coordinator CPU seconds per change (both replicas, /proc), for each kind.
Peer: 1,000 aetcd watch callbacks on one prefix in this process; a raw etcd put, p99 over the 1,000
watchers of every put. Both sides are timed the same way, one change at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import aetcd

from coordinator.client import Client
from testbed.coordinators import Coordinator, admin_token
from testbed.cpu import cpu_seconds
from testbed.etcd import Etcd
from testbed.netns import Run
from testbed.streamhosts import Arrivals, StreamHost

TIMEOUT = 120.0  # a change that never arrives is a bug, not a slow figure


def p(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1]


async def gather_limited(n: int, calls: list[Callable[[], Awaitable[object]]]) -> list[object]:
    sem = asyncio.Semaphore(n)

    async def one(call: Callable[[], Awaitable[object]]) -> object:
        async with sem:
            return await call()
    return await asyncio.gather(*(one(c) for c in calls))


class Cloud:
    """Hosts, networks and one VM per host, made through the API."""

    def __init__(self, apis: list[Client], hosts: int, l3s: int):
        self.apis, self.n_hosts, self.n_l3s = apis, hosts, l3s
        self.hosts: list[dict[str, object]] = []
        self.l3s: list[dict[str, object]] = []

    async def build(self) -> None:
        api = self.apis[0]
        self.hosts = [h for h in await gather_limited(32, [
            functools.partial(api.post, "/v1/hosts", {"name": f"sim{i}", "address": f"198.18.{i // 250}.{i % 250 + 1}"})
            for i in range(self.n_hosts)]) if isinstance(h, dict)]
        l2 = await api.post("/v1/l2-networks", {"name": "fan", "physical_interface": "eth0"})
        for i in range(self.n_l3s):
            self.l3s.append(await api.post("/v1/l3-networks", {
                "name": f"fan{i}", "l2_uuid": l2["uuid"], "cidr": f"10.{i}.0.0/16", "services": ["DHCP", "DNS"],
                "dhcp_address": f"10.{i}.0.2"}))
        await gather_limited(32, [functools.partial(self.vm, i) for i in range(self.n_hosts)])

    async def vm(self, i: int, name: str | None = None) -> dict[str, object]:
        host, l3 = self.hosts[i], self.l3s[i % self.n_l3s]
        body = {"name": name or f"vm{i}", "host_uuid": host["uuid"], "state": "Stopped",
                "l3_network_uuids": [l3["uuid"]]}
        return await self.apis[i % len(self.apis)].post("/v1/vms", body)


async def one_host(cloud: Cloud, streams: list[StreamHost], arrivals: Arrivals, changes: int) -> list[float]:
    """VM creations on random hosts: ms from the API call to the VM's arrival at its host."""
    out = []
    rng = random.Random(15)
    for n in range(changes):
        i = rng.randrange(len(streams))
        t0 = time.perf_counter()
        vm = await cloud.vm(i, f"t{n}")
        key = f"vm/{vm['uuid']}"
        await arrivals.wait(key, 1, TIMEOUT)
        out.append((streams[i].seen[key] - t0) * 1000)
    return out


async def all_hosts(cloud: Cloud, streams: list[StreamHost], arrivals: Arrivals, changes: int) -> list[float]:
    """L3 updates (the Userdata service on, off, ...): ms from the API call to each host."""
    out: list[float] = []
    l3 = cloud.l3s[0]
    key = f"l3/{l3['uuid']}"
    for n in range(changes):
        for s in streams:
            s.forget(key)
        arrivals.forget(key)
        api = cloud.apis[n % len(cloud.apis)]
        t0 = time.perf_counter()
        if n % 2 == 0:
            await api.post(f"/v1/l3-networks/{l3['uuid']}/services", {"service": "Userdata"})
        else:
            await api.delete(f"/v1/l3-networks/{l3['uuid']}/services/Userdata")
        await arrivals.wait(key, len(streams), TIMEOUT)
        out.extend((s.seen[key] - t0) * 1000 for s in streams)
    return out


async def ours(reps: list[Coordinator], token: str, args: argparse.Namespace) -> float:
    apis = [Client(r.url, token) for r in reps]
    streams: list[StreamHost] = []
    try:
        cloud = Cloud(apis, args.hosts, args.l3s)
        t = time.monotonic()
        await cloud.build()
        print(f"{args.hosts} hosts, {args.l3s} L3s, {args.hosts} VMs made in {time.monotonic() - t:.1f}s",
              file=sys.stderr)
        arrivals = Arrivals()
        streams = [StreamHost(reps[i % len(reps)].url, str(h["uuid"]), str(h["token"]), arrivals)
                   for i, h in enumerate(cloud.hosts)]
        t = time.monotonic()
        await gather_limited(64, [s.open for s in streams])
        await asyncio.gather(*(s.ready.wait() for s in streams))
        print(f"{len(streams)} streams open with their snapshots in {time.monotonic() - t:.1f}s", file=sys.stderr)
        pids = [r.proc.pid for r in reps if r.proc]
        figures = {}
        for name, phase, n in (("one host", one_host, args.changes), ("all hosts", all_hosts, args.updates)):
            await asyncio.sleep(1)
            cpu = cpu_seconds(pids)
            ms = await phase(cloud, streams, arrivals, n)
            per = (cpu_seconds(pids) - cpu) / n
            figures[name] = p(ms, 99)
            print(f"{name}: p50={p(ms, 50):.1f} p99={p(ms, 99):.1f} max={max(ms):.1f} ms over {len(ms)} arrivals "
                  f"({n} changes); coordinator CPU {per * 1000:.1f} ms per change", file=sys.stderr)
        assert not [s for s in streams if s.closed.is_set()], "a stream ended (cut off?)"
        return figures["all hosts"]
    finally:
        for s in streams:
            s.close()
        for a in apis:
            await a.close()


async def peer(endpoint: str, watchers: int, changes: int) -> float:
    """Raw etcd fan-out: `watchers` watch callbacks on one prefix; ms from a put to each callback."""
    host, _, port = endpoint.rpartition(":")
    client = aetcd.Client(host=host, port=int(port), timeout=60)
    await client.connect()
    prefix = b"/bench/fanout/"
    seen: list[float] = []
    done = asyncio.Event()

    async def on_event(ev: object) -> None:
        seen.append(time.perf_counter())
        if len(seen) == watchers:
            done.set()
    try:
        for _ in range(watchers):
            await client._watcher.add_callback(prefix, on_event, range_end=aetcd.utils.prefix_range_end(prefix))
        out: list[float] = []
        for n in range(changes):
            seen.clear()
            done.clear()
            t0 = time.perf_counter()
            await client.put(prefix + b"l3", b'{"change":%d}' % n)
            await asyncio.wait_for(done.wait(), TIMEOUT)
            out.extend((t - t0) * 1000 for t in seen)
        print(f"peer: p50={p(out, 50):.1f} p99={p(out, 99):.1f} max={max(out):.1f} ms over {len(out)} arrivals "
              f"({changes} puts, {watchers} watchers)", file=sys.stderr)
        return p(out, 99)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--l3s", type=int, default=20)
    parser.add_argument("--changes", type=int, default=200, help="VM creations timed to their host")
    parser.add_argument("--updates", type=int, default=20, help="L3 updates timed to every host")
    args = parser.parse_args()
    with Run() as run:
        etcd = Etcd(run).start()
        token = admin_token()
        reps = [Coordinator(run, etcd, token, name=f"fan-{i}").start() for i in range(2)]
        o = asyncio.run(ours(reps, token, args))
        for r in reps:
            r.stop()
        q = asyncio.run(peer(etcd.endpoint, args.hosts, args.updates))
    print(f"fanout: ours={o:.1f} peer={q:.1f} ratio={o / q:.2f}")


if __name__ == "__main__":
    main()
