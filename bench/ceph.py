"""ceph: clone and import through the cephagent HTTP API on a real one-node cluster (memstore OSD).

ceph-clone: median ms of a copy-on-write clone of a 10 GiB thin image (ours) against the same clone of
a 100 MiB fully written image (peer): a clone costs the same whatever the image size (ratio ~1).
ceph-import: MiB/s importing a 1 GiB raw image (every chunk holds data) from a file:// URL, against
`rbd import` of the same file; median of three rounds each, alternating who goes first, after an unmeasured
warm-up import, the file in the page cache.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

from aiohttp import web

from agentkit.proc import run
from cephagent.client import CephAgentClient
from cephagent.main import init_app
from cephagent.settings import CephAgentSettings
from cephagent.wire import ParentSpec
from testbed.ceph import CephCluster
from testbed.diskfiles import make_file
from testbed.netns import Run
from testbed.ports import free_port

MiB, GiB = 1 << 20, 1 << 30
POOL = "benchrbd"
TOKEN = "bench-token-0123456789"
CLONES = 7
ROUNDS = 3
SETTLE = 1.0  # seconds after deleting a 1 GiB image, while the OSD trims


async def clone_ms(client: CephAgentClient, images: list[str]) -> list[float]:
    """Median ms per image; the images take turns so that load from other jobs hits them alike."""
    times: dict[str, list[float]] = {image: [] for image in images}
    for i in range(CLONES):
        for image in images:
            t = time.perf_counter()
            await client.clone(POOL, f"{image}-c{i}", ParentSpec(pool=POOL, image=image))
            times[image].append((time.perf_counter() - t) * 1000)
    for i in range(CLONES):
        for image in images:
            await client.delete_volume(POOL, f"{image}-c{i}")
    return [statistics.median(times[image]) for image in images]


async def import_ours(client: CephAgentClient, path: Path, name: str) -> float:
    t = time.perf_counter()
    image = await client.wait(await client.import_image(POOL, name, f"file://{path}"), interval=0.02)
    rate = image.size / MiB / (time.perf_counter() - t)
    await client.delete_image(POOL, name)
    await asyncio.sleep(SETTLE)
    return rate


async def import_peer(client: CephAgentClient, ceph: CephCluster, path: Path, name: str) -> float:
    t = time.perf_counter()
    await asyncio.to_thread(run, ["rbd", "import", "--conf", str(ceph.conf), "--id", "admin", "--no-progress",
                                  str(path), f"{POOL}/{name}"], timeout=600)
    rate = path.stat().st_size / MiB / (time.perf_counter() - t)
    await client.delete_volume(POOL, name)
    await asyncio.sleep(SETTLE)
    return rate


async def measure(ceph: CephCluster, workdir: Path) -> tuple[float, float, float, float]:
    workdir.mkdir(exist_ok=True)
    settings = CephAgentSettings(token=TOKEN, ceph_conf=str(ceph.conf), client_name=ceph.client,
                                 tmp_dir=str(workdir / "staging"), file_url_roots=[str(workdir)])
    runner = web.AppRunner(init_app(settings), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with CephAgentClient(f"http://127.0.0.1:{port}", TOKEN, timeout=600) as client:
            await client.ensure_pool(POOL)
            for name, size, data in (("thin10g", 10 * GiB, 8 * MiB), ("full100m", 100 * MiB, 100 * MiB)):
                make_file(workdir / name, size, data)
                await client.wait(await client.import_image(POOL, name, f"file://{workdir / name}"))
            clone_big, clone_small = await clone_ms(client, ["thin10g", "full100m"])
            make_file(workdir / "full1g", GiB, GiB)
            await import_peer(client, ceph, workdir / "full1g", "warmup")  # the OSD's first GiB costs page faults
            ours, peer = [], []
            for i in range(ROUNDS):  # alternate who goes first
                if i % 2:
                    peer.append(await import_peer(client, ceph, workdir / "full1g", f"peer{i}"))
                ours.append(await import_ours(client, workdir / "full1g", f"ours{i}"))
                if not i % 2:
                    peer.append(await import_peer(client, ceph, workdir / "full1g", f"peer{i}"))
            print(f"import MiB/s ours={ours} rbd-import={peer}", file=sys.stderr)
            return clone_big, clone_small, statistics.median(ours), statistics.median(peer)
    finally:
        await runner.cleanup()


def main() -> None:
    with Run() as r:
        ceph = CephCluster(r, memstore_bytes=4 * GiB).start()
        try:
            clone_big, clone_small, ours, peer = asyncio.run(measure(ceph, r.path("bench")))
        finally:
            ceph.stop()
    print(f"clone: median of {CLONES} via the HTTP API; import: median of {ROUNDS}, 1 GiB raw, memstore OSD",
          file=sys.stderr)
    print(f"ceph-clone: ours={clone_big:.1f} peer={clone_small:.1f} ratio={clone_big / clone_small:.2f}")
    print(f"ceph-import: ours={ours:.0f} peer={peer:.0f} ratio={ours / peer:.2f}")


if __name__ == "__main__":
    main()
