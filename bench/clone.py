"""image-clone, first line: ms from `POST /v1/vms` from a cached 10 GiB thin image to its root volume
ready, against the same from a 100 MiB image. O(1): a root volume is a qcow2 overlay on the cached
image, whatever its size (`bench/run image-clone` prints this line first; `bench/run clone` alone).

A real coordinator on etcd and one simulated KVM host (the real agent, its libvirtd) with a LocalStorage.
Both images are raw sparse files already in the host's image cache (as the agent leaves them after the
first use, which this line does not measure: the image-clone bench's other line does), recorded Ready in
the `images` resource with their sha256. Each round creates a stopped VM from one image and waits,
watching etcd, for the host's report of its root volume `Ready`; rounds alternate between the images,
median of ROUNDS each.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import statistics
import time
from pathlib import Path

from coordinator.client import Client
from coordinator.etcd import keys
from coordinator.etcd.store import Store
from testbed.coordinators import Coordinator, admin_token
from testbed.etcd import Etcd
from testbed.kvmhost import KvmHost
from testbed.netns import Run
from testbed.switch import Switch

MiB, GiB = 1 << 20, 1 << 30
ROUNDS = 9
IMAGES = {"big": 10 * GiB, "small": 100 * MiB}


def sparse_sha256(size: int) -> str:
    """sha256 of `size` zero bytes, without a file."""
    h, block = hashlib.sha256(), bytes(MiB)
    for _ in range(size // MiB):
        h.update(block)
    h.update(bytes(size % MiB))
    return h.hexdigest()


def cache(root: Path, uuid: str, size: int, sha256: str) -> None:
    """The image as the host's cache holds it after its first use (kvmagent/storage/imagecache.py)."""
    folder = root / "images" / uuid
    folder.mkdir(parents=True)
    path = folder / "image.raw"
    with open(path, "wb") as f:
        f.truncate(size)
    os.chmod(path, 0o444)
    (folder / "image.json").write_text(json.dumps({"uuid": uuid, "sha256": sha256, "size": size, "format": "raw",
                                                   "virtual_size": size, "cached_at": time.time()}))
    (folder / "last-used").write_text(f"{time.time()}\n")


def record(uuid: str, size: int, sha256: str) -> dict[str, object]:
    """The image's record in the `images` resource (an image store's image, Ready)."""
    now = time.time()
    return {"uuid": uuid, "name": uuid, "backup_storage_uuid": "bench-store", "backup_storage_type": "ImageStore",
            "format": "raw", "media_type": "RootVolumeTemplate", "url": "http://bench.invalid/", "status": "Ready",
            "size": size, "virtual_size": size, "sha256": sha256, "created_at": now, "updated_at": now,
            "url_secret": ""}


async def ready(store: Store, volume: str, timeout: float = 60) -> None:
    key = keys.observed("volume", volume)
    async with asyncio.timeout(timeout):
        while True:
            entry = await store.get(key)
            if entry is not None and isinstance(entry.value, dict) and entry.value.get("state") == "Ready":
                return
            await asyncio.sleep(0.005)


async def measure(api: Client, store: Store, host: str) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in IMAGES}
    for i in range(2 * ROUNDS + 2):
        name = list(IMAGES)[i % 2]
        t = time.perf_counter()
        vm = await api.post("/v1/vms", {"name": f"clone{i}", "host_uuid": host, "image_uuid": name,
                                        "primary_storage_uuid": "local", "state": "Stopped"})
        await ready(store, vm["spec"]["volumes"][0]["uuid"])
        ms = (time.perf_counter() - t) * 1000
        if i >= 2:  # the first of each is a warm-up
            times[name].append(ms)
        await api.delete(f"/v1/vms/{vm['uuid']}")
    return times


async def bench(run: Run, co: Coordinator, token: str, etcd: Etcd) -> str:
    kvm = KvmHost(run, Switch(run), "kvm1")
    local = run.path("local")
    store = Store(etcd.endpoint)
    await store.connect()
    try:
        async with Client(co.url, token) as api:
            await kvm.register(api)
            kvm.start(co, network_services=False)
            for name, size in IMAGES.items():
                sha = await asyncio.to_thread(sparse_sha256, size)
                await asyncio.to_thread(cache, local, name, size, sha)
                await store.put(keys.image(name), record(name, size, sha))
            ps = await api.post("/v1/primary-storage", {"name": "local", "type": "LocalStorage", "url": str(local)})
            async with asyncio.timeout(30):
                while not ((await api.get(f"/v1/primary-storage/{ps['uuid']}"))["hosts"].get(kvm.uuid) or {}).get(
                        "capacity"):
                    await asyncio.sleep(0.2)
            times = await measure(api, store, kvm.uuid)
    finally:
        await store.close()
        kvm.close()
    ours, peer = statistics.median(times["big"]), statistics.median(times["small"])
    print(f"clone ms, 10 GiB: {[round(t) for t in times['big']]}; 100 MiB: {[round(t) for t in times['small']]}",
          flush=True)
    return f"image-clone: ours={ours:.0f} peer={peer:.0f} ratio={ours / peer:.2f}"


def line() -> str:
    """The bench's line (everything it starts is gone when it returns)."""
    with Run() as run:
        etcd = Etcd(run).start()
        token = admin_token()
        co = Coordinator(run, etcd, token).start()
        return asyncio.run(bench(run, co, token, etcd))


if __name__ == "__main__":
    print(line(), flush=True)
