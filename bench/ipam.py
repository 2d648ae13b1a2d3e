"""ipam: VM creations with address allocation per second through 2 coordinator replicas, 32 concurrent
clients, against raw aetcd puts per second (32 concurrent tasks) on the same etcd.

Ours twice, each on a fresh /16: one VM per request (`POST /v1/vms`), then batches of BATCH alike VMs
per request and per etcd transaction (`POST /v1/vms/batch`). The closing figure is the batch rate; the
lines before it give both, and the CPU each process spent per 1,000 creations (what bounds them).
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import Callable

from coordinator.client import Client
from coordinator.etcd.store import Store
from testbed.coordinators import Coordinator, admin_token
from testbed.cpu import cpu_seconds
from testbed.etcd import Etcd
from testbed.netns import Run

CLIENTS = 32
SECONDS = 10.0
BATCH = 25


async def ours(urls: list[str], token: str, batch: int, subnet: str) -> tuple[float, int]:
    """VM creations per second and how many, `batch` per request (1: the plain create)."""
    clients = [Client(u, token) for u in urls]
    try:
        a = clients[0]
        host = await a.post("/v1/hosts", {"name": f"bench-host-{batch}", "address": f"198.18.1.{batch}"})
        l2 = await a.post("/v1/l2-networks", {"name": f"bench-{batch}", "physical_interface": f"bench{batch}"})
        l3 = await a.post("/v1/l3-networks", {"name": f"bench-{batch}", "l2_uuid": l2["uuid"], "cidr": subnet})
        counter = itertools.count()
        done = 0
        deadline = time.monotonic() + SECONDS

        async def worker(i: int) -> None:
            nonlocal done
            api = clients[i % len(clients)]
            body = {"host_uuid": host["uuid"], "state": "Stopped", "l3_network_uuids": [l3["uuid"]]}
            while time.monotonic() < deadline:
                if batch == 1:
                    await api.post("/v1/vms", {**body, "name": f"b{next(counter)}"})
                else:
                    await api.post("/v1/vms/batch", {**body, "name": f"b{next(counter)}", "count": batch})
                done += batch
        t0 = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(CLIENTS)))
        return done / (time.monotonic() - t0), done
    finally:
        for c in clients:
            await c.close()


async def peer(endpoint: str) -> tuple[float, int]:
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
    return rate, done


def measured(label: str, run: Callable[[], tuple[float, int]], pids: dict[str, list[int]]) -> float:
    """Run one phase; print its rate and the CPU ms each process group spent per 1,000 operations."""
    before = {k: cpu_seconds(v) for k, v in pids.items()}
    own = time.process_time()
    rate, done = run()
    used = {k: cpu_seconds(v) - before[k] for k, v in pids.items()} | {"client": time.process_time() - own}
    per = ", ".join(f"{k} {v * 1e6 / max(done, 1):.0f}" for k, v in used.items())
    print(f"{label}: {rate:.0f}/s; CPU ms per 1,000: {per}", file=sys.stderr)
    return rate


def main() -> None:
    with Run() as run:
        etcd = Etcd(run).start()
        token = admin_token()
        reps = [Coordinator(run, etcd, token, name=f"bench-{i}").start() for i in range(2)]
        urls = [r.url for r in reps]
        pids = {"coordinators": [r.proc.pid for r in reps if r.proc], "etcd": [etcd.proc.pid] if etcd.proc else []}
        measured("one VM per request", lambda: asyncio.run(ours(urls, token, 1, "198.19.0.0/16")), pids)
        batched = measured(f"{BATCH} per request and transaction",
                           lambda: asyncio.run(ours(urls, token, BATCH, "10.20.0.0/16")), pids)
        p = measured("raw etcd puts", lambda: asyncio.run(peer(etcd.endpoint)), pids)
    print(f"2 replicas, {CLIENTS} clients, {SECONDS:.0f}s each", file=sys.stderr)
    print(f"ipam: ours={batched:.0f} peer={p:.0f} ratio={batched / p:.3f}")


if __name__ == "__main__":
    main()
