"""image-clone: an image's first use and its later clones.

first use (the line before the last): MiB/s of adding a 1 GiB raw image (every block holds data) to the image
store from a web server (lighttpd, in another namespace, across a veth): from `PUT /v1/images/{id}` to
the image ready (downloaded, sha256 computed, format checked with qemu-img, published; its md5 and
fsync follow in the background, and are let finish before the next round), against `curl -o` of the
same URL from the store's namespace. Median of five rounds each, alternating who goes first, after an
unmeasured warm-up of each, the file in the web server's page cache. Also shown: reading the ready
image back from the store with a read ticket (what a host's cache fetch costs), against curl from
lighttpd.

clone (the closing line): ms from `POST /v1/vms` with `image_uuid` (a Stopped VM) to its root volume
reported Ready through the API (`GET /v1/volumes/{uuid}` polled every 20 ms), from a cached 10 GiB thin image
(qcow2, 64 MiB of data) against the same from a 100 MiB raw image (every block data): the whole system, a
coordinator on etcd, an image store, a simulated KVM host with a LocalStorage. Both images are cached on the
host by an unmeasured first VM; then the median of CLONE_ROUNDS VMs each, alternating. O(1) in the image's size
means a ratio near 1. `bench/run image-clone --clone-only` measures this line alone.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from agentkit.proc import run as sh
from coordinator.client import Client
from imagestore.client import ImageStoreClient
from imagestore.wire import AddRequest
from testbed.coordinators import Coordinator, admin_token
from testbed.diskfiles import make_file
from testbed.etcd import Etcd
from testbed.imagecloud import add_image, image_store, local_storage
from testbed.imagelab import ImageLab
from testbed.imagestore import ns_session
from testbed.kvmhost import KvmHost
from testbed.netns import Run
from testbed.ports import free_port
from testbed.switch import Switch

MiB, GiB = 1 << 20, 1 << 30
SIZE = GiB
ROUNDS = 5
CLONE_ROUNDS = 9


def curl(lab: ImageLab, url: str, out: Path, headers: tuple[str, ...] = ()) -> float:
    """MiB/s of `curl -o out url` run in the store's namespace."""
    args = [a for h in headers for a in ("-H", h)]
    t = time.perf_counter()
    lab.store_ns.sh("curl", "-sSf", *args, "-o", str(out), url, timeout=600)
    rate = out.stat().st_size / MiB / (time.perf_counter() - t)
    out.unlink()
    return rate


async def add(client: ImageStoreClient, image_id: str, url: str) -> float:
    t = time.perf_counter()
    await client.add(image_id, AddRequest(url=url, format="raw"))
    info = await client.wait(image_id, interval=0.02, timeout=600)
    assert info.size is not None
    rate = info.size / MiB / (time.perf_counter() - t)
    while not info.md5:  # computed after ready: let it finish before the next measurement
        await asyncio.sleep(0.1)
        info = await client.image(image_id)
    return rate


async def measure(lab: ImageLab) -> tuple[list[float], list[float], list[float], list[float]]:
    url, out = lab.web.url("full1g.raw"), lab.run.path("curl.out")
    ours, peer, serve, serve_peer = [], [], [], []
    async with ns_session(lab.store_ns.name) as session:
        client = lab.store.client(session)
        await asyncio.to_thread(curl, lab, url, out)  # warm-ups
        await add(client, "warmup", url)
        await client.delete("warmup")
        for i in range(ROUNDS):
            if i % 2:
                peer.append(await asyncio.to_thread(curl, lab, url, out))
            ours.append(await add(client, f"r{i}", url))
            if not i % 2:
                peer.append(await asyncio.to_thread(curl, lab, url, out))
            ticket = f"Authorization: Bearer {lab.store.ticket(f'r{i}')}"
            data = f"{lab.store.url}/v1/images/r{i}/data"
            serve.append(await asyncio.to_thread(curl, lab, data, out, (ticket,)))
            serve_peer.append(await asyncio.to_thread(curl, lab, url, out))
            await client.delete(f"r{i}")
    return ours, peer, serve, serve_peer


def first_use() -> tuple[str, str]:
    """The image-serve and first-use lines."""
    with Run() as r:
        files = r.path("files")
        (files / "allowed").mkdir(parents=True)
        make_file(files / "full1g.raw", SIZE, SIZE)
        lab = ImageLab(r, files, reserve_bytes=0, log_level="INFO").start()
        try:
            ours, peer, serve, serve_peer = asyncio.run(measure(lab))
        finally:
            lab.stop()
    print(f"first use MiB/s: imagestore add={[round(x) for x in ours]} curl={[round(x) for x in peer]}; "
          f"read back with a ticket={[round(x) for x in serve]} curl from lighttpd={[round(x) for x in serve_peer]}",
          file=sys.stderr)
    first, curl_rate = statistics.median(ours), statistics.median(peer)
    return (f"image-serve: ours={statistics.median(serve):.0f} peer={statistics.median(serve_peer):.0f} "
            f"ratio={statistics.median(serve) / statistics.median(serve_peer):.2f}",
            f"image-clone first-use: ours={first:.0f} peer={curl_rate:.0f} ratio={first / curl_rate:.2f}")


def clone_images(files: Path) -> dict[str, Path]:
    """The 10 GiB thin qcow2 and the 100 MiB raw image, by name."""
    raw = files / "thin.raw"
    make_file(raw, 10 * GiB, 64 * MiB)
    sh(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(files / "thin10g.qcow2")], timeout=600)
    raw.unlink()
    make_file(files / "full100m.raw", 100 * MiB, 100 * MiB)
    return {"10g": files / "thin10g.qcow2", "100m": files / "full100m.raw"}


async def vm_to_root_ready(api: Client, image: dict[str, Any], name: str, timeout: float = 600) -> float:
    """ms from the VM's POST to its root volume Ready; the VM is deleted after."""
    t = time.perf_counter()
    vm = await api.post("/v1/vms", {"name": name, "image_uuid": image["uuid"], "state": "Stopped"})
    root = vm["spec"]["volumes"][0]["uuid"]
    while (vol := await api.get(f"/v1/volumes/{root}"))["status"] != "Ready":
        if vol["status"] == "Error" or time.perf_counter() - t > timeout:
            raise RuntimeError(f"root volume of {name} never ready: {vol}")
        await asyncio.sleep(0.02)
    ms = (time.perf_counter() - t) * 1000
    await api.delete(f"/v1/vms/{vm['uuid']}", wait="60")
    return ms


async def clones(run: Run, co: Coordinator, token: str, port: int, images: dict[str, Path]) -> dict[str, list[float]]:
    kvm = KvmHost(run, Switch(run), "kvm1")
    async with Client(co.url, token) as api:
        store = await image_store(api, run, "images", port, file_roots=[images["10g"].parent])
        added = {k: await add_image(api, "images", f"img-{k}", f"file://{p}", timeout=900) for k, p in images.items()}
        if bad := [i for i in added.values() if i["status"] != "Ready"]:
            raise RuntimeError(f"images not added: {bad}")
        await kvm.register(api)
        kvm.relay(port)
        kvm.start(co, network_services=False)  # VMs without NICs: nothing to serve them
        try:
            await local_storage(api, "local", run.path("local"), kvm)
            for k, image in added.items():  # the first use: the host caches the image
                await vm_to_root_ready(api, image, f"warm-{k}")
            ms: dict[str, list[float]] = {k: [] for k in added}
            for i in range(CLONE_ROUNDS):
                for k in (list(added) if i % 2 else reversed(added)):
                    ms[k].append(await vm_to_root_ready(api, added[k], f"r{i}-{k}"))
            return ms
        finally:
            kvm.close()
            store.stop()


def clone() -> str:
    """The clone line."""
    with Run() as r:
        files = r.path("files")
        files.mkdir()
        images = clone_images(files)
        token = admin_token()
        port = free_port()  # the image store's, which the coordinator calls
        co = Coordinator(r, Etcd(r).start(), token, name="coord-bench", imagestore_port=port).start()
        ms = asyncio.run(clones(r, co, token, port, images))
    print(f"clone ms (POST /v1/vms to root volume Ready): 10 GiB thin={[round(x) for x in ms['10g']]} "
          f"100 MiB={[round(x) for x in ms['100m']]}", file=sys.stderr)
    ours, peer = statistics.median(ms["10g"]), statistics.median(ms["100m"])
    return f"image-clone: ours={ours:.0f} peer={peer:.0f} ratio={ours / peer:.2f}"


def main() -> None:
    serve, first = first_use() if "--clone-only" not in sys.argv else ("", "")
    closing = clone()
    for line in (serve, first, closing):
        if line:
            print(line)


if __name__ == "__main__":
    main()
