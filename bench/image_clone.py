"""image-clone: an image's first use and its later clones.

first use (this line, now): MiB/s of adding a 1 GiB raw image (every block holds data) to the image
store from a web server (lighttpd, in another namespace, across a veth): from `PUT /v1/images/{id}` to
the image ready (downloaded, sha256 computed, format checked with qemu-img, published; its md5 and
fsync follow in the background, and are let finish before the next round), against `curl -o` of the
same URL from the store's namespace. Median of five rounds each, alternating who goes first, after an
unmeasured warm-up of each, the file in the web server's page cache. Also shown: reading the ready
image back from the store with a read ticket (what a host's cache fetch costs), against curl from
lighttpd.

clone (to come: it needs primary storage with an image cache): ms from `POST /v1/vms` from a cached
10 GiB thin image to its root volume ready, against the same from a 100 MiB image.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

from imagestore.client import ImageStoreClient
from imagestore.wire import AddRequest
from testbed.diskfiles import make_file
from testbed.imagelab import ImageLab
from testbed.imagestore import ns_session
from testbed.netns import Run

MiB, GiB = 1 << 20, 1 << 30
SIZE = GiB
ROUNDS = 5


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


def main() -> None:
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
    print("image-clone (clone line): needs primary storage with an image cache (issue 16, W16b)", file=sys.stderr)
    first, curl_rate = statistics.median(ours), statistics.median(peer)
    print(f"image-serve: ours={statistics.median(serve):.0f} peer={statistics.median(serve_peer):.0f} "
          f"ratio={statistics.median(serve) / statistics.median(serve_peer):.2f}")
    print(f"image-clone first-use: ours={first:.0f} peer={curl_rate:.0f} ratio={first / curl_rate:.2f}")


if __name__ == "__main__":
    main()
