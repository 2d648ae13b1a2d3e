"""ipam: VM creations with address allocation per second through 2 coordinator replicas, 32 concurrent
clients, against raw aetcd puts per second (32 concurrent tasks) on the same etcd."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import sys
import time

from coordinator.client import Client
from coordinator.etcd.store import Store
from testbed.coordinators import Coordinator, admin_token
from testbed.etcd import Etcd
from testbed.netns import Run

CLIENTS = 32
SECONDS = 10.0


async def ours(urls: list[str], token: str) -> float:
    clients = [Client(u, token) for u in urls]
    try:
        a = clients[0]
        host = await a.post("/v1/hosts", {"name": "bench-host", "address": "198.18.0.2"})
        l2 = await a.post("/v1/l2-networks", {"name": "bench", "physical_interface": "eth0"})
        net = ipaddress.IPv4Network("198.19.0.0/16")
        l3 = await a.post("/v1/l3-networks", {"name": "bench", "l2_uuid": l2["uuid"], "cidr": str(net)})
        counter = itertools.count()
        done = 0
        deadline = time.monotonic() + SECONDS

        async def worker(i: int) -> None:
            nonlocal done
            api = clients[i % len(clients)]
            while time.monotonic() < deadline:
                await api.post("/v1/vms", {"name": f"b{next(counter)}", "host_uuid": host["uuid"], "state": "Stopped",
                                           "l3_network_uuids": [l3["uuid"]]})
                done += 1
        t0 = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(CLIENTS)))
        return done / (time.monotonic() - t0)
    finally:
        for c in clients:
            await c.close()


async def peer(endpoint: str) -> float:
    store = Store(endpoint)
    await store.connect()
    done = 0
    deadline = time.monotonic() + SECONDS

    async def worker(i: int) -> None:
        nonlocal done
        n = 0
        while time.monotonic() < deadline:
            await store.put(f"/bench/raw/{i}/{n}", {"vm": "x"})
            n += 1
            done += 1
    t0 = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(CLIENTS)))
    rate = done / (time.monotonic() - t0)
    await store.close()
    return rate


def main() -> None:
    with Run() as run:
        etcd = Etcd(run).start()
        token = admin_token()
        reps = [Coordinator(run, etcd, token, name=f"bench-{i}").start() for i in range(2)]
        o = asyncio.run(ours([r.url for r in reps], token))
        p = asyncio.run(peer(etcd.endpoint))
    print(f"2 replicas, {CLIENTS} clients, {SECONDS:.0f}s each", file=sys.stderr)
    print(f"ipam: ours={o:.0f} peer={p:.0f} ratio={o / p:.3f}")


if __name__ == "__main__":
    main()
